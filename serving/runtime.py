"""Process settings both servers apply once the model is loaded."""

from __future__ import annotations

import gc

GC_YOUNG_THRESHOLD = 50_000


def settle_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the loaded model and libraries, and off each request's clicks.

    A loaded predictor holds ~300k objects the collector tracks (the web framework, numpy, pandas,
    scikit-learn, gensim, the model); a full collection walks them all, 144 ms measured here, a pause any
    request could land on. `gc.freeze` moves everything alive after loading to a generation the collector
    never scans. A 1,000-click request allocates some 3,000 containers (the parsed JSON): with the default
    threshold of 700 young objects each request set off several collections that walked its clicks, while
    at 50,000 they die by reference counting first. Cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
