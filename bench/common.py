"""Shared bench helpers: synthetic data cached per size, peak memory of a child process, result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(os.environ.get("ATTRIBUTION_BENCH_CACHE", "/tmp/attribution-bench"))
# The real Kaggle sample, committed with the tests (tests/data/README.md says where it comes from).
REAL_SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "train_sample.csv.gz"


def synthetic_clicks_path(rows: int, seed: int = 0) -> Path:
    """Parquet of `rows` synthetic clicks, generated once and reused across bench runs."""
    path = CACHE / f"clicks_{rows}_{seed}.parquet"
    if not path.exists():
        from attribution.io import write_clicks
        from attribution.synth import generate

        CACHE.mkdir(parents=True, exist_ok=True)
        write_clicks(generate(rows, seed=seed), path)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: Path, args: list[str], timeout: float) -> dict:
    """Run one measurement in a fresh interpreter, so each engine's peak memory is its own."""
    out = subprocess.run([sys.executable, str(script), *args], check=False, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write_results(name: str, result: dict, table_header: list[str], table_rows: list[list[object]], notes: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    lines = [f"# {result.get('title', name)}", ""] + notes + [""]
    lines.append("| " + " | ".join(table_header) + " |")
    lines.append("|" + "---|" * len(table_header))
    for row in table_rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
