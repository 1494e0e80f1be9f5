"""The loaded model and its directory (no pickles): a fitted feature union (model.estimators) and a native
XGBoost booster, with the feature spec it was built with.

    save_model(model_dir, union, booster, spec, negative_rate, metadata)
    load_model(model_dir).predict_proba(frame)   # calibrated P(attributed) per click
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.pipeline import FeatureUnion

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.model.cat2vec import Cat2Vec
from attribution.model.dense_predict import predict_dense
from attribution.model.estimators import FeatureAssembler, feature_names, recalibrate
from attribution.schema import ID_FIELDS
from attribution.storage import local_dir_for_read, local_dir_for_write

MODEL_FILE = "model.json"
SPEC_FILE = "feature_spec.json"
PIPELINE_FILE = "pipeline.json"
METADATA_FILE = "metadata.json"
TRIALS_FILE = "trials.json"


class ModelLoadError(ValueError):
    """A model directory that the predictor must refuse: missing or corrupt files, another feature spec."""


@dataclass
class ModelBundle:
    union: FeatureUnion
    booster: xgb.Booster
    spec: FeatureSpec
    negative_rate: float
    metadata: dict = field(default_factory=dict)

    def matrix(self, frame: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        # The union's own transform goes through joblib, which costs milliseconds per call; the predictor
        # scores one request at a time, so the fitted parts are applied directly (same columns, same order).
        # Each step writes its block of one float32 matrix (what np.hstack of their transforms gives).
        steps = [step for _, step in self.union.transformer_list]
        widths = self.__dict__.get("_widths")
        if widths is None:
            widths = self.__dict__["_widths"] = [len(step.feature_names()) for step in steps]
        out = np.empty((len(frame[ID_FIELDS[0]]), sum(widths)), dtype=np.float32)
        at = 0
        for step, width in zip(steps, widths):
            step.transform_into(frame, out[:, at : at + width])
            at += width
        return out

    def predict_proba(self, frame: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(attributed) for clicks with their window features (a frame, or column name ->
        array); one booster call."""
        if len(frame[ID_FIELDS[0]]) == 0:
            return np.empty(0, dtype=np.float64)
        raw = predict_dense(self.booster, self.matrix(frame))
        return recalibrate(np.asarray(raw, dtype=np.float64), self.negative_rate)


def save_model(
    model_dir: str | os.PathLike, union: FeatureUnion, booster: xgb.Booster, spec: FeatureSpec,
    negative_rate: float, metadata: dict,
) -> str:
    """Write the model directory (a local path or a URI such as gs://); `spec` is the one the union was
    built with, and the one hashed. Returns model_dir as given."""
    with local_dir_for_write(model_dir) as local:
        _save_local(Path(local), union, booster, spec, negative_rate, metadata)
    return os.fspath(model_dir)


def _save_local(
    d: Path, union: FeatureUnion, booster: xgb.Booster, spec: FeatureSpec, negative_rate: float, metadata: dict,
) -> None:
    booster.save_model(d / MODEL_FILE)
    cfg: dict = {"negative_rate": negative_rate, "steps": []}
    for name, step in union.transformer_list:
        if isinstance(step, Cat2Vec):
            step.save(d)
            cfg["steps"].append({"name": name, "kind": "cat2vec"})
        else:
            if step.spec().hash != spec.hash:
                raise ValueError(f"the feature union was built with spec {step.spec().hash}, not {spec.hash}")
            cfg["steps"].append({"name": name, "kind": "assemble", "use_window_features": step.use_window_features})
    cfg["feature_names"] = feature_names(union)
    (d / PIPELINE_FILE).write_text(json.dumps(cfg, indent=2))
    (d / SPEC_FILE).write_text(json.dumps({"hash": spec.hash, "spec": spec.to_dict()}, indent=2))
    (d / METADATA_FILE).write_text(json.dumps({**metadata, "feature_spec_hash": spec.hash}, indent=2, default=str))


def load_model(model_dir: str | os.PathLike, expected_spec: FeatureSpec = DEFAULT_SPEC) -> ModelBundle:
    """The model of a directory (a local path or a URI such as gs://); ModelLoadError names what is wrong."""
    try:
        with local_dir_for_read(model_dir) as local:
            return _load_local(Path(local), os.fspath(model_dir), expected_spec)
    except FileNotFoundError as err:
        raise ModelLoadError(f"model directory {os.fspath(model_dir)} does not exist: {err}") from err


def _load_local(d: Path, uri: str, expected_spec: FeatureSpec) -> ModelBundle:
    """Load from the local folder d; messages name uri, where the model lives."""
    if not d.is_dir():
        raise ModelLoadError(f"model directory {uri} does not exist")
    for name in (MODEL_FILE, SPEC_FILE, PIPELINE_FILE, METADATA_FILE):
        if not (d / name).is_file():
            raise ModelLoadError(f"model directory {uri} is missing {name}")
    try:
        spec_doc = json.loads((d / SPEC_FILE).read_text())
        cfg = json.loads((d / PIPELINE_FILE).read_text())
        metadata = json.loads((d / METADATA_FILE).read_text())
        spec = FeatureSpec.from_dict(spec_doc["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"model directory {uri}: unreadable {SPEC_FILE}/{PIPELINE_FILE}/{METADATA_FILE}: {err}") from err
    if spec.hash != spec_doc.get("hash"):
        raise ModelLoadError(f"{uri}/{SPEC_FILE} is corrupt: its spec hashes to {spec.hash}, the file says {spec_doc.get('hash')}")
    if spec.hash != expected_spec.hash:
        raise ModelLoadError(
            f"model directory {uri} was trained with feature spec hash {spec.hash}, but this code computes "
            f"feature spec hash {expected_spec.hash}: retrain the model or deploy the matching code"
        )
    parts = []
    try:
        for step in cfg["steps"]:
            if step["kind"] == "cat2vec":
                parts.append((step["name"], Cat2Vec.load(d)))
            else:
                parts.append((step["name"], FeatureAssembler(spec.to_json(), step["use_window_features"])))
        booster = xgb.Booster()
        booster.load_model(d / MODEL_FILE)
    except (xgb.core.XGBoostError, OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model directory {uri}: cannot load the model files: {err}") from err
    union = FeatureUnion(parts)
    if booster.num_features() != len(cfg["feature_names"]):
        raise ModelLoadError(
            f"model directory {uri}: booster expects {booster.num_features()} features, pipeline makes {len(cfg['feature_names'])}"
        )
    return ModelBundle(union, booster, spec, float(cfg["negative_rate"]), metadata)


