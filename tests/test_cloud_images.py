"""Images from one place: skaffold's build output (digests) or a registry and tag, read by every user of an
image; the compiled pipeline and the SparkApplication it renders use what was built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attribution import __version__
from attribution.platform import images, spark_submit

REPO = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "ab" * 32


def build_output(tmp_path: Path, names=images.NAMES) -> Path:
    path = tmp_path / "build.json"
    path.write_text(json.dumps({"builds": [
        {"imageName": n, "tag": f"europe-docker.pkg.dev/p/r/{n}:3f2a1bc@{DIGEST}"} for n in names]}))
    return path


def test_default_is_registry_name_and_version():
    assert images.image("attribution-spark", {}) == f"{images.DEFAULT_REGISTRY}/attribution-spark:{__version__}"


def test_registry_and_tag_or_digest_from_the_environment():
    env = {images.REGISTRY_ENV: "europe-docker.pkg.dev/p/r", images.TAG_ENV: "3f2a1bc"}
    assert images.image("attribution-serving", env) == "europe-docker.pkg.dev/p/r/attribution-serving:3f2a1bc"
    env[images.TAG_ENV] = DIGEST
    assert images.image("attribution-serving", env) == f"europe-docker.pkg.dev/p/r/attribution-serving@{DIGEST}"


def test_skaffold_build_output_wins_and_must_hold_every_image(tmp_path):
    env = {images.BUILD_OUTPUT_ENV: str(build_output(tmp_path)), images.TAG_ENV: "ignored"}
    assert images.image("attribution-pipeline", env).endswith(f"attribution-pipeline:3f2a1bc@{DIGEST}")
    env[images.BUILD_OUTPUT_ENV] = str(build_output(tmp_path, names=("attribution-pipeline",)))
    with pytest.raises(ValueError, match="no build of attribution-spark"):
        images.image("attribution-spark", env)
    with pytest.raises(ValueError, match="unknown image"):
        images.image("attribution-trainer", {})


def test_the_spark_application_uses_the_image_set_on_its_step(monkeypatch):
    monkeypatch.setenv(images.override_env("attribution-spark"), f"europe-docker.pkg.dev/p/r/attribution-spark@{DIGEST}")
    doc = spark_submit.render_spark_application("gs://b/f", "gs://b/m")
    assert doc["spec"]["image"] == f"europe-docker.pkg.dev/p/r/attribution-spark@{DIGEST}"


def test_compiled_pipeline_uses_the_built_images(tmp_path):
    pytest.importorskip("kfp")
    out = tmp_path / "p.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTRIBUTION_")}
    subprocess.run([sys.executable, "-m", "attribution.cli", "pipeline", "compile", "--output", str(out),
                    "--build-output", str(build_output(tmp_path))], check=True, cwd=REPO, env=env, timeout=300)
    spec = yaml.safe_load(out.read_text())
    executors = spec["deploymentSpec"]["executors"].values()
    assert {e["container"]["image"] for e in executors} == {
        f"europe-docker.pkg.dev/p/r/attribution-pipeline:3f2a1bc@{DIGEST}"}
    train = next(e for name, e in spec["deploymentSpec"]["executors"].items() if "train" in name)
    env_vars = {v["name"]: v["value"] for v in train["container"].get("env", [])}
    assert env_vars["ATTRIBUTION_SPARK_IMAGE"] == f"europe-docker.pkg.dev/p/r/attribution-spark:3f2a1bc@{DIGEST}"
