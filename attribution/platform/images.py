"""Container images, tagged from the package version in this one place (components, manifests, skaffold)."""

from attribution import __version__

REGISTRY = "us-docker.pkg.dev/PROJECT_ID/attribution"
PIPELINE_IMAGE = f"{REGISTRY}/attribution-pipeline:{__version__}"
SPARK_IMAGE = f"{REGISTRY}/attribution-spark:{__version__}"
SERVING_IMAGE = f"{REGISTRY}/attribution-serving:{__version__}"
