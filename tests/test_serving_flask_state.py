"""The Flask app takes the online state's flags (--clock, --max-clock-skew, --allowed-lateness, --warm-from)
through its real entry point, `attribution serve --flask`, as KServe does: a warm start from the click log
so far continues a replay exactly, and a click too far ahead of the clock is a 400 naming click_time that
changes nothing."""

from __future__ import annotations

import numpy as np
import requests

from attribution.features.online.flags import FLAGS
from attribution.io import write_clicks
from tests.redis_fixture import ServerProcess, click_dicts, replay_order, scraped_metric

BATCH = 500


def test_flask_warm_start_and_clock_skew_through_the_cli(serving_model_dir, sample_clicks,
                                                         expected_sample_probabilities, tmp_path):
    ordered = replay_order(sample_clicks)
    clicks = click_dicts(ordered)
    cut, rest = 30_000, 2_000
    log = write_clicks(ordered.iloc[:cut][["ip", "app", "device", "os", "channel", "click_time"]], tmp_path / "log.parquet")
    with ServerProcess("flask", serving_model_dir, "memory", tmp_path,
                       extra=("--clock=stream", "--max-clock-skew=60", f"--warm-from={log}")) as srv:
        assert scraped_metric(srv.base, "attribution_state_events") > 0, "ready only once warm"
        s = requests.Session()
        got: list[float] = []
        newest = int(ordered["click_time"].iloc[cut - 1])
        for i in range(cut, cut + rest, BATCH):
            if i == cut + BATCH:  # a click an hour ahead of the stream, midway: refused, its batch not recorded
                forged = {**clicks[i], "click_time": newest + 3600}
                r = s.post(srv.base + "/predict", json={"clicks": [clicks[i], forged]}, timeout=30)
                assert r.status_code == 400, r.text
                body = r.json()
                assert body["field"] == "click_time" and body["instance"] == 1, body
                assert "at most 60 s (--max-clock-skew)" in body["error"], body
            r = s.post(srv.base + "/predict", json={"clicks": clicks[i : i + BATCH]}, timeout=60)
            assert r.status_code == 200, r.text
            got.extend(r.json()["probabilities"])
        want = expected_sample_probabilities[ordered["row_id"].to_numpy()[cut : cut + rest]]
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-6)


def test_one_definition_of_the_state_flags_for_every_entry_point():
    """KServe's parser, `attribution serve` and its Flask branch all take the flags from FLAGS."""
    from attribution.cli import build_parser
    from serving.__main__ import parser as kserve_parser

    serve = build_parser().parse_args(["serve", "--model-dir", "m", "--clock=stream", "--max-clock-skew=9",
                                       "--allowed-lateness=4", "--warm-from=bq://p.d.t"])
    kserve = kserve_parser.parse_known_args(["--clock=stream", "--max-clock-skew=9", "--allowed-lateness=4",
                                             "--warm-from=bq://p.d.t"])[0]
    for dest, _ in FLAGS.values():
        assert getattr(serve, dest) == getattr(kserve, dest)
    from attribution.features.online.flags import state_argv

    assert state_argv(serve) == ["--clock=stream", "--max-clock-skew=9", "--allowed-lateness=4", "--warm-from=bq://p.d.t"]
