"""One storage layer for URIs: local paths, gs:// (gcsfs) and any other fsspec protocol, read and written
alike. Nothing else in the library turns a URI into a `pathlib.Path` (that would make `gs://b/x` into the
local `gs:/b/x`); tests/test_storage.py greps for it.

    write_text("gs://b/models/run-1/metadata.json", text)       # or a local path
    with local_dir_for_write("gs://b/models/run-1") as d: ...    # files written to d land under the URI
    with local_dir_for_read("gs://b/models/run-1") as d: ...     # the URI's files, as a local folder

A missing object is `FileNotFoundError` whatever the backend (gcsfs maps google's NotFound / 404 to it).
Libraries that write only to local files (XGBoost, numpy, Spark's driver) work in a local folder that is
uploaded once; local paths are used in place, so the local behaviour is unchanged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

import fsspec
from fsspec.core import url_to_fs

LOCAL_PROTOCOLS = ("file", "local")


def is_remote(uri: str | os.PathLike) -> bool:
    """True for a URI with a non-local protocol (gs://, memory://, ...)."""
    text = os.fspath(uri)
    protocol, sep, _ = text.partition("://")
    return bool(sep) and protocol not in LOCAL_PROTOCOLS


def join(uri: str | os.PathLike, *parts: str) -> str:
    """uri/part/...: a plain string join, right for local paths and URIs alike."""
    text = os.fspath(uri)
    if not is_remote(text):
        return os.path.join(text, *parts)
    return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str | os.PathLike) -> tuple[fsspec.AbstractFileSystem, str]:
    """(the fsspec filesystem, the path inside it) for a local path or a URI."""
    return url_to_fs(os.fspath(uri))


def exists(uri: str | os.PathLike) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def isfile(uri: str | os.PathLike) -> bool:
    fs, path = filesystem(uri)
    return fs.isfile(path)


def isdir(uri: str | os.PathLike) -> bool:
    fs, path = filesystem(uri)
    return fs.isdir(path)


def read_bytes(uri: str | os.PathLike) -> bytes:
    fs, path = filesystem(uri)
    return fs.cat_file(path)


def read_text(uri: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


def write_bytes(uri: str | os.PathLike, data: bytes) -> str:
    """Write data to uri (parents created for local paths; object stores have none); returns the uri."""
    fs, path = filesystem(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)
    return os.fspath(uri)


def write_text(uri: str | os.PathLike, text: str, encoding: str = "utf-8") -> str:
    return write_bytes(uri, text.encode(encoding))


def makedirs(uri: str | os.PathLike) -> None:
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)


def upload_dir(local_dir: str | os.PathLike, uri: str) -> None:
    """Every file under local_dir to the same relative names under uri."""
    fs, path = filesystem(uri)
    root = os.fspath(local_dir)
    for base, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/")
            fs.put_file(os.path.join(base, name), f"{path.rstrip('/')}/{rel}")


def download_dir(uri: str, local_dir: str | os.PathLike) -> None:
    """Every object under uri to the same relative names under local_dir; FileNotFoundError when none."""
    fs, path = filesystem(uri)
    names = [n for n in fs.find(path.rstrip("/") + "/")]
    if not names:
        raise FileNotFoundError(f"{uri} holds no files")
    prefix = path.rstrip("/") + "/"
    for name in names:
        rel = name[len(prefix):] if name.startswith(prefix) else name.rpartition("/")[2]
        target = os.path.join(os.fspath(local_dir), *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(name, target)


@contextlib.contextmanager
def local_dir_for_write(uri: str | os.PathLike) -> Iterator[str]:
    """A local folder whose files end up at uri: the folder itself for a local path, else a temporary one
    uploaded when the block ends without an error."""
    if not is_remote(uri):
        os.makedirs(os.fspath(uri), exist_ok=True)
        yield os.fspath(uri)
        return
    with tempfile.TemporaryDirectory(prefix="attribution-upload-") as tmp:
        yield tmp
        upload_dir(tmp, os.fspath(uri))


@contextlib.contextmanager
def local_dir_for_read(uri: str | os.PathLike) -> Iterator[str]:
    """uri's files as a local folder: the folder itself for a local path, else a temporary download."""
    if not is_remote(uri):
        yield os.fspath(uri)
        return
    with tempfile.TemporaryDirectory(prefix="attribution-download-") as tmp:
        download_dir(os.fspath(uri), tmp)
        yield tmp


@contextlib.contextmanager
def local_file_for_read(uri: str | os.PathLike) -> Iterator[str]:
    """uri as a local file path (downloaded once when remote), for readers that want a file name."""
    if not is_remote(uri):
        yield os.fspath(uri)
        return
    fs, path = filesystem(uri)
    with tempfile.TemporaryDirectory(prefix="attribution-download-") as tmp:
        target = os.path.join(tmp, path.rstrip("/").rpartition("/")[2] or "data")
        if fs.isdir(path):
            download_dir(os.fspath(uri), target)
        else:
            fs.get_file(path, target)
        yield target
