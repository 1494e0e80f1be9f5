"""One line per pipeline task as kfp.local finishes it: name, seconds and the task's key figure.

kfp.local reports tasks through the root logger ("Executing task 'x'", "Task 'x' finished with status
SUCCESS") and swaps the root logger's handlers while it runs, so this is a filter on the root logger (kept
through the swap) that watches those two records and reads the finished task's executor output."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STARTED = re.compile(r"Executing task '([^']+)'")
FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")


def _artifact_metadata(output: dict[str, Any], name: str) -> dict[str, Any]:
    return output.get("artifacts", {}).get(name, {}).get("artifacts", [{}])[0].get("metadata", {})


def key_figure(task: str, output: dict[str, Any]) -> str:
    """What a person wants to see of each step, from its executor_output.json."""
    if task == "resolve-input":
        return f"cache token {output.get('parameterValues', {}).get('cache_token', '?')}"
    if task == "extract-features":
        m = _artifact_metadata(output, "features")
        return f"{int(m.get('rows', 0)):,} rows ({m.get('engine', '?')})"
    if task == "fit-cat2vec":
        m = _artifact_metadata(output, "cat2vec")
        return f"{int(m.get('vocabulary', 0)):,} tokens from {int(m.get('training_rows', 0)):,} rows"
    if task == "tune-params":
        m = _artifact_metadata(output, "params")
        evals = int(m.get("max_evals", 0))
        return f"{evals} Hyperopt trials" if evals else "default parameters (no trials)"
    if task == "train-model":
        m = _artifact_metadata(output, "model")
        return f"{m.get('trainer', '?')}, holdout from {m.get('valid_from', '?')}"
    if task == "evaluate-model":
        m = _artifact_metadata(output, "metrics")
        return (f"holdout roc_auc {m.get('roc_auc', float('nan')):.4f}, pr_auc {m.get('pr_auc', float('nan')):.4f} "
                f"({int(m.get('rows', 0)):,} rows)")
    if task == "record-live-metrics":
        m = _artifact_metadata(output, "live")
        if not m.get("live_available"):
            return f"no live metrics ({m.get('live_source', '?')})"
        return f"live roc_auc {m.get('live_roc_auc', float('nan')):.4f} beside holdout {m.get('holdout_roc_auc', float('nan')):.4f}"
    if task == "deploy-model":
        m = _artifact_metadata(output, "decision")
        return "deployed" if m.get("deployed") else f"not deployed: {'; '.join(m.get('reasons', []))}"
    return ""


class TaskLines(logging.Filter):
    """Writes `  extract-features    3.1s  100,000 rows (vectorized)` through `write` per finished task."""

    def __init__(self, pipeline_root: Path, write: Callable[[str], None]) -> None:
        super().__init__()
        self.root, self.write, self.started = pipeline_root, write, {}

    def filter(self, record: logging.LogRecord) -> bool:
        self._watch(ANSI.sub("", record.getMessage()))
        return True

    def _watch(self, message: str) -> None:
        if m := STARTED.search(message):
            self.started[m.group(1)] = time.perf_counter()
        elif m := FINISHED.search(message):
            task, status = m.groups()
            seconds = time.perf_counter() - self.started.get(task, time.perf_counter())
            figure = self._figure(task) if status == "SUCCESS" else status
            self.write(f"  {task:<19} {seconds:6.1f}s  {figure}")

    def _figure(self, task: str) -> str:
        outputs = sorted(self.root.glob(f"*/{task}/executor_output.json"), key=lambda p: p.stat().st_mtime)
        try:
            return key_figure(task, json.loads(outputs[-1].read_text())) if outputs else ""
        except (OSError, ValueError, KeyError, TypeError):  # a figure is a courtesy; never fail the run for it
            return ""
