"""Kubeflow Pipelines components: one file per step, each a typed lightweight component whose body imports
and calls `attribution.*` (all logic lives there). Every component runs in the pipeline image with the
package preinstalled (`install_kfp_package=False`, no runtime pip installs), so kfp.local runs offline."""

from components.deploy import deploy_model
from components.evaluate import evaluate_model
from components.extract_features import extract_features
from components.fit_cat2vec import fit_cat2vec
from components.record_live_metrics import record_live_metrics
from components.resolve_input import resolve_input
from components.train import train_model
from components.tune import tune_params

__all__ = ["deploy_model", "evaluate_model", "extract_features", "fit_cat2vec", "record_live_metrics", "resolve_input", "train_model", "tune_params"]
