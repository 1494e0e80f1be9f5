"""Container images, named in this one place (components, SparkApplication, manifests, skaffold).

By default: REGISTRY/NAME:VERSION. What was really built wins, in this order:
  0. $ATTRIBUTION_SPARK_IMAGE (etc.): the one image's reference, which the compiled pipeline sets on the
     train task so the SparkApplication it renders uses the image compiled in;
  1. $ATTRIBUTION_BUILD_OUTPUT: skaffold's build output (`skaffold build --file-output build.json`), whose
     tags carry the pushed digest (NAME:TAG@sha256:...), so prod runs exactly what was built;
  2. $ATTRIBUTION_REGISTRY and $ATTRIBUTION_IMAGE_TAG (a tag, or a digest sha256:...).
`attribution pipeline compile --build-output build.json` (or --registry/--image-tag) sets these before the
components are defined, so the compiled YAML (and, through 0., the SparkApplication) use the built images.
"""

from __future__ import annotations

import json
import os

from attribution import __version__

DEFAULT_REGISTRY = "us-docker.pkg.dev/PROJECT_ID/attribution"
NAMES = ("attribution-pipeline", "attribution-spark", "attribution-serving")
BUILD_OUTPUT_ENV, REGISTRY_ENV, TAG_ENV = "ATTRIBUTION_BUILD_OUTPUT", "ATTRIBUTION_REGISTRY", "ATTRIBUTION_IMAGE_TAG"


def built_images(text: str) -> dict[str, str]:
    """skaffold's build output ({"builds": [{"imageName", "tag"}]}) as short name -> full reference."""
    doc = json.loads(text)
    out = {}
    for build in doc.get("builds") or []:
        name, tag = build.get("imageName"), build.get("tag")
        if not (name and tag):
            raise ValueError(f"skaffold build output entry without imageName/tag: {build}")
        out[name.rsplit("/", 1)[-1]] = tag
    return out


def override_env(name: str) -> str:
    """ATTRIBUTION_SPARK_IMAGE etc.: one image's full reference, set on a task's pod."""
    return name.upper().replace("-", "_") + "_IMAGE"


def image(name: str, env: dict[str, str] | None = None) -> str:
    """The full reference of image `name` (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"unknown image {name!r}; the project builds {NAMES}")
    env = os.environ if env is None else env
    pinned = env.get(override_env(name))
    if pinned:  # set on a pipeline task by the compiled pipeline: what the step's pod renders
        return pinned
    if env.get(BUILD_OUTPUT_ENV):
        with open(env[BUILD_OUTPUT_ENV], encoding="utf-8") as f:  # a local file written by skaffold
            built = built_images(f.read())
        if name not in built:
            raise ValueError(f"{env[BUILD_OUTPUT_ENV]} has no build of {name} (it has {sorted(built)})")
        return built[name]
    registry = env.get(REGISTRY_ENV) or DEFAULT_REGISTRY
    tag = env.get(TAG_ENV) or __version__
    return f"{registry}/{name}@{tag}" if tag.startswith("sha256:") else f"{registry}/{name}:{tag}"


PIPELINE_IMAGE = image("attribution-pipeline")
SPARK_IMAGE = image("attribution-spark")
SERVING_IMAGE = image("attribution-serving")
