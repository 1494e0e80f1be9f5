"""The online state's command-line flags, defined once for every entry point that serves: `python -m serving`
(KServe), the Flask app (`attribution serve --flask`) and `attribution serve`, which passes them on.

    add_state_flags(parser)          # --clock, --max-clock-skew, --allowed-lateness, --warm-from
    state_options(args)              # -> InferenceCore keyword arguments
    state_argv(args)                 # -> the same flags as argv, for a server started as a new process
"""

from __future__ import annotations

import argparse
from typing import Any

from attribution.features.online.clock import CLOCKS, DEFAULT_MAX_SKEW

# flag -> (InferenceCore argument, add_argument keywords); docs/online-state.md explains each
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--clock": ("clock", {"choices": CLOCKS, "default": "server",
                          "help": "reference for --max-clock-skew: server (production) or stream (replays of history)"}),
    "--max-clock-skew": ("max_clock_skew", {"type": int, "default": DEFAULT_MAX_SKEW,
                                            "help": "seconds a click_time may be ahead of the reference clock (else 400)"}),
    "--allowed-lateness": ("allowed_lateness", {
        "type": int, "default": 0,
        "help": "seconds behind the stream a click is still recorded (later: scored, not recorded, counted)"}),
    "--warm-from": ("warm_from", {
        "default": None,
        "help": "click log to rebuild the state from before reporting ready: a CSV/Parquet path or gs:// URI, "
                "or a BigQuery table bq://PROJECT.DATASET.TABLE"}),
}


def add_state_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("online state time and warm start (docs/online-state.md)")
    for flag, (dest, kwargs) in FLAGS.items():
        group.add_argument(flag, dest=dest, **kwargs)


def state_options(args: argparse.Namespace) -> dict[str, Any]:
    return {dest: getattr(args, dest) for dest, _ in FLAGS.values()}


def state_argv(args: argparse.Namespace) -> list[str]:
    """The flags a user gave (those not at their default), as argv."""
    out = []
    for flag, (dest, kwargs) in FLAGS.items():
        value = getattr(args, dest)
        if value != kwargs["default"]:
            out.append(f"{flag}={value}")
    return out
