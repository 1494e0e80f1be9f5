"""Every feature query carries maximum_bytes_billed and is estimated by a dry run first; a query over the
limit is refused before anything is billed. The client is a recording with google-cloud-bigquery's own
signatures; the job configs are the real classes."""

from __future__ import annotations

import inspect

import pytest
from google.cloud import bigquery

from attribution.features import bigquery as bq

SOURCE, DEST, EXPORT = "p.d.clicks", "p.staging.features_x", "gs://b/run/features/part-*.parquet"


class RecordingBigQuery:
    def __init__(self, scanned: int):
        self.scanned, self.calls = scanned, []

    def query(self, query, job_config=None, job_id=None, job_id_prefix=None, location=None, project=None,
              retry=bigquery.client.DEFAULT_RETRY, timeout=None, job_retry=bigquery.client.DEFAULT_JOB_RETRY,
              api_method=bigquery.enums.QueryApiMethod.INSERT, timestamp_precision=None):
        self.calls.append(("query", job_config, query))
        return type("Job", (), {"job_id": f"q{len(self.calls)}", "total_bytes_processed": self.scanned,
                                "total_bytes_billed": self.scanned, "result": lambda self, timeout=None: None})()

    def get_table(self, table, retry=bigquery.client.DEFAULT_RETRY, timeout=None):
        self.calls.append(("get_table", table))
        return type("T", (), {"num_rows": 10})()



def test_recording_client_has_the_real_signatures():
    for name in ("query", "get_table"):
        ours = list(inspect.signature(getattr(RecordingBigQuery, name)).parameters)
        assert ours == list(inspect.signature(getattr(bigquery.Client, name)).parameters), name


def test_dry_run_first_then_the_capped_query():
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT, maximum_bytes_billed=2**30)
    client = RecordingBigQuery(scanned=2**29)
    out = bq.run_feature_jobs(client, jobs)
    dry, real = client.calls[0][1], client.calls[1][1]
    assert dry.dry_run is True and dry.use_query_cache is False and not real.dry_run
    assert real.maximum_bytes_billed == 2**30
    (export,) = [c[1] for c in client.calls[2:] if c[0] == "query"]  # EXPORT DATA, capped too
    assert export.maximum_bytes_billed == 2**30 and not export.dry_run
    assert out["bytes_processed_estimate"] == 2**29 and out["usd_estimate"] == pytest.approx(0.5 / 1024 * bq.USD_PER_TIB, abs=1e-4)


def test_a_query_over_the_limit_is_refused_before_it_runs():
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT, maximum_bytes_billed=2**30)
    client = RecordingBigQuery(scanned=2**31)
    with pytest.raises(ValueError, match="over maximum_bytes_billed"):
        bq.run_feature_jobs(client, jobs)
    assert len(client.calls) == 1 and client.calls[0][1].dry_run  # only the dry run was sent


def test_the_default_limit_is_in_the_rest_body():
    jobs = bq.build_feature_jobs(SOURCE, DEST, EXPORT)
    body = jobs.query_config.to_api_repr()["query"]
    assert int(body["maximumBytesBilled"]) == bq.DEFAULT_MAXIMUM_BYTES_BILLED
