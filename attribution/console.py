"""Concise terminal, details in a log file: everything written to stdout/stderr (by this process, by
libraries and by child processes, which inherit the descriptors) goes to the log, and `say` reaches the
terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def details_to(log_path: Path) -> Iterator[Callable[[str], None]]:
    """Redirect descriptors 1 and 2 to `log_path` (appending) and the root logger to it; yield `say`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    saved_err = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # sys.stderr now writes to the log
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def say(line: str) -> None:
        terminal.write(line + "\n")

    try:
        yield say
    finally:
        root.removeHandler(handler)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(terminal.fileno(), 1)
        os.dup2(saved_err, 2)
        os.close(saved_err)
        terminal.close()
