"""The repository stands alone: a user's fresh clone has everything its tests, benches and docs read."""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from pathlib import Path

from tests.conftest import SAMPLE, SCHEMAS

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SHA256 = "4002317e4162b3c27e4b40f604afd9f7b6f1c91e97674114279c3409a8a05b2a"
# The sibling folder next to CI's checkout, named once; the pattern is built from the name, so this file
# holds no path into it and is checked like every other file.
SIBLING_NAME = "shared"
SIBLING = re.compile(
    r"\.\./" + SIBLING_NAME + r"|(parents\[\d\]|\.parent)\s*/\s*[\"']" + SIBLING_NAME + r"[\"']"
)


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [ROOT / name for name in out.stdout.decode().split("\0") if name]


def test_no_tracked_file_reaches_outside_the_checkout() -> None:
    offenders = []
    for path in tracked_files():
        if path.suffix in {".gz", ".png"} or path.parent == SCHEMAS or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1) if SIBLING.search(line)]
    assert not offenders, f"these lines read outside the repository: {offenders}"


def test_the_committed_sample_is_kaggles() -> None:
    with gzip.open(SAMPLE, "rb") as fh:
        data = fh.read()
    assert hashlib.sha256(data).hexdigest() == SAMPLE_SHA256
    assert data.count(b"\n") == 100_001  # header + 100,000 rows


def test_vendored_schemas_are_present() -> None:
    names = {p.name for p in SCHEMAS.iterdir()}
    assert {"serving.kserve.io_inferenceservices.yaml", "sparkoperator.k8s.io_sparkapplications.yaml",
            "skaffold-v4beta13.json"} <= names
