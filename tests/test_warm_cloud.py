"""Warm start from the cloud sources, against the real emulators on loopback (attribution.platform.emulators):
a gs:// click log through attribution.storage and gcsfs (fake-gcs-server), and a BigQuery click table through
google-cloud-bigquery (bqemulator 1.4.0), of which one query reads only the retention window's rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import requests

from attribution.features.online.state import MemoryStore
from attribution.features.online.warm import recent_clicks, warm_start
from attribution.io import write_clicks
from attribution.platform.emulators import start_bigquery_emulator, start_fake_gcs
from tests.emulated_cli import needs_emulators
from tests.redis_fixture import ServerProcess, click_dicts, replay_order, scraped_metric

COLUMNS = ["ip", "app", "device", "os", "channel", "click_time"]


@needs_emulators
def test_kserve_warms_from_a_gs_click_log(serving_model_dir, sample_clicks, expected_sample_probabilities, tmp_path):
    """The predictor started with --warm-from=gs://... on fake-gcs-server continues the replay exactly."""
    ordered = replay_order(sample_clicks)
    cut, rest = 30_000, 1_000
    bucket = tmp_path / "data" / "click-logs"
    bucket.mkdir(parents=True)
    write_clicks(ordered.iloc[:cut][COLUMNS], bucket / "log.parquet")
    with start_fake_gcs(data_dir=tmp_path / "data") as gcs, \
            ServerProcess("kserve", serving_model_dir, "memory", tmp_path, env=gcs.env,
                          extra=("--clock=stream", "--warm-from=gs://click-logs/log.parquet")) as srv:
        assert scraped_metric(srv.base, "attribution_state_events") > 0, "ready only once warm"
        clicks = click_dicts(ordered.iloc[cut : cut + rest])
        got: list[float] = []
        s = requests.Session()
        for i in range(0, rest, 500):
            r = s.post(srv.base + "/v1/models/attribution:predict", json={"instances": clicks[i : i + 500]}, timeout=60)
            assert r.status_code == 200, r.text
            got.extend(r.json()["predictions"])
        want = expected_sample_probabilities[ordered["row_id"].to_numpy()[cut : cut + rest]]
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)


@needs_emulators
def test_warm_start_from_a_bigquery_table_reads_only_the_window(sample_clicks, tmp_path):
    ordered = replay_order(sample_clicks)
    retention = MemoryStore().retention
    end = 30_000
    t = ordered["click_time"].to_numpy()
    start = int(np.searchsorted(t, t[end - 1] - retention - 1800))  # half an hour more than the window
    rows = ordered.iloc[start:end].reset_index(drop=True)
    log = write_clicks(rows[COLUMNS], tmp_path / "log.parquet")
    with start_bigquery_emulator("attribution-test") as bq:
        client = bq.client()
        from google.cloud import bigquery

        from attribution.features.bigquery import CLICK_TABLE_SCHEMA

        client.create_dataset("clicks_ds")
        client.create_table(bigquery.Table("attribution-test.clicks_ds.clicks",
                                           schema=[bigquery.SchemaField(n, ty, mode=m) for n, ty, m in CLICK_TABLE_SCHEMA]))
        records = [{"row_id": i, **{c: int(r[c]) for c in COLUMNS[:5]},
                    "click_time": dt.datetime.fromtimestamp(int(r["click_time"]), dt.UTC).isoformat()}
                   for i, r in enumerate(rows.to_dict("records"))]
        for i in range(0, len(records), 5000):
            assert client.insert_rows_json("attribution-test.clicks_ds.clicks", records[i : i + 5000]) == []
        source = "bq://attribution-test.clicks_ds.clicks"
        # the env is set only for this test's process: the warm start finds the emulator as a deployment finds BigQuery
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("BIGQUERY_EMULATOR_HOST", bq.url)
            from_bq = recent_clicks(source, retention)
            warm_bq = MemoryStore()
            warm_start(warm_bq, source)
    from_file = recent_clicks(str(log), retention)
    assert 0 < len(from_bq) < len(rows), "the query keeps only the window's rows"
    assert from_bq[COLUMNS].equals(from_file[COLUMNS].astype(np.int64))
    warm_file = MemoryStore()
    warm_start(warm_file, str(log))
    assert warm_bq.stats() == warm_file.stats()
    nxt = ordered.iloc[end : end + 500]
    ids, times = nxt[COLUMNS[:5]].to_numpy(np.int64), nxt["click_time"].to_numpy(np.int64)
    np.testing.assert_array_equal(warm_bq.score_arrays(ids, times), warm_file.score_arrays(ids, times))


def test_a_bigquery_source_must_name_project_dataset_and_table():
    with pytest.raises(ValueError, match="bq://PROJECT.DATASET.TABLE"):
        recent_clicks("bq://dataset.table", 3600)
    with pytest.raises(ValueError, match="bq://PROJECT.DATASET.TABLE"):
        recent_clicks("bq://p.d.t` WHERE 1=1 --", 3600)
