"""Step 0: what pins the extraction's input. With a snapshot_date the cache token is that date, so the
extraction's inputs repeat and KFP's cache can reuse its features; without one the token is this run's
id, so the extraction never hits the cache. Also fixes the training range's end once per run (retries
of the extraction after midnight keep the same window)."""

from typing import NamedTuple

from kfp import dsl

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def resolve_input(snapshot_date: str, run_id: str) -> NamedTuple("InputWindow", [("cache_token", str),
                                                                                   ("window_end", str)]):
    from collections import namedtuple

    from attribution.bigquery import window_end

    window = namedtuple("InputWindow", ["cache_token", "window_end"])
    return window(f"snapshot:{snapshot_date}" if snapshot_date else f"run:{run_id}", window_end(snapshot_date))
