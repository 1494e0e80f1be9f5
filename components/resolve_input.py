"""Step 0: what pins the extraction's input (attribution.steps.resolve_input)."""

from typing import NamedTuple

from kfp import dsl

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def resolve_input(snapshot_date: str, run_id: str) -> NamedTuple("InputWindow", [("cache_token", str),
                                                                                   ("window_end", str)]):
    from collections import namedtuple

    from attribution import steps

    window = steps.resolve_input(snapshot_date, run_id)
    return namedtuple("InputWindow", ["cache_token", "window_end"])(window.cache_token, window.window_end)
