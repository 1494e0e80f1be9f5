"""Servers this code starts on 127.0.0.1 (emulators, predictors, the demo's): a free port from the OS, and
the wait until the server answers, failing early when its process exits."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-2000:]}" if log is not None and log.exists() else ""


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 60.0, log: Path | None = None,
              poll_s: float = 0.2) -> None:
    """Until GET url answers 2xx (a port that opens before the service is ready answers 5xx or resets);
    fails early, with the tail of `log`, when `proc` exits."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{Path(str(proc.args[0])).name} exited with code {proc.returncode}{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except OSError as err:
            last = str(err)
        time.sleep(poll_s)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s ({last}){_tail(log)}")
