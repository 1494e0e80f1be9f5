"""`attribution run --cloud emulated` as a user runs it (a fresh process each time: gcsfs reads the
emulator's address when imported), and `needs_emulators`, the skip of every test on the emulators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attribution.platform.emulators import missing

REPO = Path(__file__).resolve().parents[1]
ROWS = "20000"
MISSING = missing()
needs_emulators = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


def run_cli(out: Path, *extra: str) -> dict:
    # Thresholds low enough for a model of 20k clicks: the gate's comparison is what is tested here.
    cmd = [sys.executable, "-m", "attribution.cli", "run", "--cloud", "emulated", "--rows", ROWS, "--output", str(out),
           "--min-roc-auc", "0.6", "--min-pr-auc", "0.001", *extra]
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    proc = subprocess.run(cmd, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads((out / "run.json").read_text())


def objects(out: Path, uri: str) -> set[str]:
    """Names under a gs:// prefix as fake-gcs-server keeps them on disk (bucket/object)."""
    root = out / "emulated" / "gcs" / "objects" / uri.removeprefix("gs://")
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
