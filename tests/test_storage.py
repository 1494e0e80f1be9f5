"""The one storage layer (attribution/storage.py): local paths and remote URIs read and written alike, a
missing object is FileNotFoundError, model directories round-trip through a remote store, and no code turns
a URI into a pathlib.Path."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import fsspec
import pytest

from attribution import storage

REPO = Path(__file__).resolve().parents[1]
CODE = ("attribution", "components", "pipelines", "serving")


@pytest.fixture
def memory_root():
    root = f"memory://test-{os.getpid()}-{id(object())}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root.removeprefix("memory://")):
        fs.rm(root.removeprefix("memory://"), recursive=True)


def test_join_keeps_the_scheme_and_local_paths_use_the_os():
    assert storage.join("gs://b/models/run-1/", "metadata.json") == "gs://b/models/run-1/metadata.json"
    assert storage.join("gs://b", "a", "/b") == "gs://b/a/b"
    assert storage.join("/tmp/x", "m.json") == os.path.join("/tmp/x", "m.json")
    assert storage.is_remote("gs://b/x") and storage.is_remote("memory://x")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x") and not storage.is_remote("rel/x")


@pytest.mark.parametrize("where", ["local", "remote"])
def test_text_round_trip_and_missing_objects(tmp_path, memory_root, where):
    root = str(tmp_path / "deep") if where == "local" else memory_root
    uri = storage.join(root, "a", "b", "m.json")
    assert not storage.exists(uri)
    with pytest.raises(FileNotFoundError):
        storage.read_text(uri)
    storage.write_text(uri, '{"k": 1}')
    assert storage.read_text(uri) == '{"k": 1}' and storage.isfile(uri)
    if where == "local":
        assert Path(uri).read_text() == '{"k": 1}'  # a local path stays a plain file


def test_directories_upload_and_download(tmp_path, memory_root):
    uri = storage.join(memory_root, "model")
    with storage.local_dir_for_write(uri) as d:
        Path(d, "model.json").write_text("booster")
        Path(d, "sub").mkdir()
        Path(d, "sub", "vectors.npy").write_bytes(b"\x00\x01")
        assert not storage.exists(storage.join(uri, "model.json"))  # uploaded when the block ends
    assert storage.read_text(storage.join(uri, "model.json")) == "booster"
    with storage.local_dir_for_read(uri) as d:
        assert Path(d, "sub", "vectors.npy").read_bytes() == b"\x00\x01"
    with pytest.raises(FileNotFoundError, match="holds no files"), storage.local_dir_for_read(memory_root + "/none"):
        pass


def test_a_failed_write_uploads_nothing(memory_root):
    uri = storage.join(memory_root, "half")
    with pytest.raises(RuntimeError), storage.local_dir_for_write(uri) as d:
        Path(d, "model.json").write_text("partial")
        raise RuntimeError("training failed")
    assert not storage.exists(storage.join(uri, "model.json"))


def test_local_directories_are_used_in_place(tmp_path):
    with storage.local_dir_for_write(tmp_path / "m") as d:
        assert d == str(tmp_path / "m") and Path(d).is_dir()
    with storage.local_dir_for_read(tmp_path / "m") as d:
        assert d == str(tmp_path / "m")


def test_model_directory_round_trip_through_a_remote_store(serving_model_dir, sample_clicks, memory_root):
    from attribution.features.compute import compute_features
    from attribution.model.bundle import ModelLoadError, load_model, save_model

    local = load_model(serving_model_dir)
    uri = storage.join(memory_root, "models", "run-1")
    save_model(uri, local.union, local.booster, local.spec, local.negative_rate, local.metadata)
    assert storage.isfile(storage.join(uri, "metadata.json"))
    frame = compute_features(sample_clicks.head(2000), "vectorized")
    remote = load_model(uri)
    assert (remote.predict_proba(frame) == local.predict_proba(frame)).all()
    with pytest.raises(ModelLoadError, match=f"{memory_root}/models/run-2 does not exist"):
        load_model(storage.join(memory_root, "models", "run-2"))


# ---- no Path() on a URI ----------------------------------------------------------------------------------------
URI_NAMES = ("uri", "model_dir", "model_uri")  # identifiers that may hold gs://


def _identifier(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def path_on_uri_calls(source: str) -> list[tuple[int, str]]:
    """(line, text) of Path(x) / open(x) / os.path.*(x) where x is named like a URI, or is a gs:// literal."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        fn = node.func
        name = fn.id if isinstance(fn, ast.Name) else (
            f"{_identifier(fn.value)}.{fn.attr}" if isinstance(fn, ast.Attribute) else "")
        if name not in ("Path", "PurePath", "open", "pathlib.Path") and not name.startswith("path."):
            continue
        arg = node.args[0]
        ident = _identifier(arg) or ""
        literal = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ""
        if any(ident.lower() == n or ident.lower().endswith("_" + n) for n in URI_NAMES) or "://" in literal:
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_grep_finds_path_on_a_uri():
    bad = "from pathlib import Path\ndef f(model_uri, a):\n    Path(model_uri)\n    open(a.model_dir)\n    Path('gs://b/x')\n"
    assert [line for line, _ in path_on_uri_calls(bad)] == [3, 4, 5]
    assert path_on_uri_calls("from pathlib import Path\nPath(local_dir)\nstorage.read_text(model_uri)\n") == []


def test_no_code_turns_a_uri_into_a_path():
    offenders = [f"{p.relative_to(REPO)}:{line}: {text}"
                 for pkg in CODE for p in sorted((REPO / pkg).rglob("*.py"))
                 for line, text in path_on_uri_calls(p.read_text())]
    assert not offenders, "a URI must go through attribution.storage, not pathlib/open:\n" + "\n".join(offenders)
