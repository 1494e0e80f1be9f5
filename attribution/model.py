"""The model: a scikit-learn Pipeline of feature assembly -> Cat2Vec -> XGBoost, trained on a time split,
saved as one model directory without pickles (DESIGN.md §4) and loaded back by the predictor.

    train(input, model_dir, TrainConfig())      # features, split, Cat2Vec, tuning, final fit, metrics
    load_model(model_dir).predict_proba(frame)  # calibrated P(attributed) per click
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion, Pipeline

from attribution.cat2vec import Cat2Vec
from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.metrics import binary_metrics
from attribution.schema import LABEL, to_epoch

log = logging.getLogger(__name__)
ID_FIELDS = ("app", "device", "os", "channel")
MODEL_FILE = "model.json"
SPEC_FILE = "feature_spec.json"
PIPELINE_FILE = "pipeline.json"
METADATA_FILE = "metadata.json"
TRIALS_FILE = "trials.json"
DEFAULT_PARAMS: dict[str, float | int] = {
    "max_depth": 6,
    "learning_rate": 0.05,
    "min_child_weight": 4.0,
    "subsample": 0.8,
    "colsample_bytree": 0.7,
    "reg_alpha": 0.0,
    "reg_lambda": 1.0,
    "max_rounds": 1500,
}
EARLY_STOPPING_ROUNDS = 60


class ModelLoadError(ValueError):
    """A model directory that the predictor must refuse: missing or corrupt files, another feature spec."""


# ---- pipeline pieces ----------------------------------------------------------------------------------
class FeatureAssembler(BaseEstimator, TransformerMixin):
    """Raw ids and hour of day, plus the window features log-scaled (as the seed did); NaN stays NaN
    (XGBoost learns a direction for "no earlier click")."""

    def __init__(self, spec_json: str = DEFAULT_SPEC.to_json(), use_window_features: bool = True) -> None:
        self.spec_json = spec_json
        self.use_window_features = use_window_features

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureAssembler:
        return self

    def _spec(self) -> FeatureSpec:
        # Parsed once per instance: the predictor calls transform for every request.
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] != self.spec_json:
            cached = (self.spec_json, FeatureSpec.from_dict(json.loads(self.spec_json)))
            self.__dict__["_parsed"] = cached
        return cached[1]

    def feature_names(self) -> list[str]:
        plain, logged = self._columns()
        return plain + logged

    def _columns(self) -> tuple[list[str], list[str]]:
        """(columns taken as they are, window columns log-scaled), cached with the parsed spec."""
        key = (self.spec_json, self.use_window_features)
        cached = self.__dict__.get("_cols")
        if cached is None or cached[0] != key:
            spec = self._spec()
            window = spec.count_names + spec.distinct_names + spec.since_previous_names
            cached = (key, list(ID_FIELDS) + spec.hour_names, window if self.use_window_features else [])
            self.__dict__["_cols"] = cached
        return cached[1], cached[2]

    def transform(self, X: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """X: a frame, or column name -> array (the predictor's path, which skips pandas per request)."""
        plain, logged = self._columns()
        cols = [np.asarray(X[f], dtype=np.float32) for f in plain]
        cols += [np.log1p(np.asarray(X[n], dtype=np.float32)) for n in logged]
        return np.column_stack(cols)


def make_features(use_window_features: bool = True, use_cat2vec: bool = True, seed: int = 0, **c2v: object):
    parts = [("assemble", FeatureAssembler(DEFAULT_SPEC.to_json(), use_window_features))]
    if use_cat2vec:
        parts.append(("cat2vec", Cat2Vec(seed=seed, **c2v)))
    return FeatureUnion(parts)


def feature_names(union: FeatureUnion) -> list[str]:
    return [n for _, step in union.transformer_list for n in step.feature_names()]


def xgb_params(params: dict, seed: int, n_threads: int | None = None) -> dict:
    return {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "tree_method": "hist",
        "max_depth": int(params["max_depth"]),
        "learning_rate": float(params["learning_rate"]),
        "min_child_weight": float(params["min_child_weight"]),
        "subsample": float(params["subsample"]),
        "colsample_bytree": float(params["colsample_bytree"]),
        "reg_alpha": float(params["reg_alpha"]),
        "reg_lambda": float(params["reg_lambda"]),
        "seed": seed,
        **({"nthread": n_threads} if n_threads else {}),
    }


def recalibrate(p: np.ndarray, negative_rate: float) -> np.ndarray:
    """Undo negative down-sampling: odds scale by the kept fraction of negatives."""
    if negative_rate >= 1.0:
        return p
    return p * negative_rate / (p * negative_rate + (1.0 - p))


# ---- the loaded model -----------------------------------------------------------------------------------
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
        parts = [step.transform(frame) for _, step in self.union.transformer_list]
        return np.hstack(parts) if len(parts) > 1 else parts[0]

    def predict_proba(self, frame: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """Calibrated P(attributed) for clicks with their window features (a frame, or column name ->
        array); one booster call."""
        if len(frame["ip"]) == 0:
            return np.empty(0, dtype=np.float64)
        raw = self.booster.inplace_predict(self.matrix(frame))
        return recalibrate(np.asarray(raw, dtype=np.float64), self.negative_rate)

    def pipeline(self) -> Pipeline:
        """The fitted scikit-learn Pipeline (features -> booster wrapped as an XGBClassifier)."""
        clf = xgb.XGBClassifier()
        clf._Booster = self.booster
        clf.n_classes_ = 2
        return Pipeline([("features", self.union), ("xgb", clf)])


def save_model(
    model_dir: str | Path, union: FeatureUnion, booster: xgb.Booster, negative_rate: float, metadata: dict
) -> Path:
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    booster.save_model(d / MODEL_FILE)
    cfg = {"negative_rate": negative_rate, "steps": []}
    for name, step in union.transformer_list:
        if isinstance(step, Cat2Vec):
            step.save(d)
            cfg["steps"].append({"name": name, "kind": "cat2vec"})
        else:
            cfg["steps"].append({"name": name, "kind": "assemble", "use_window_features": step.use_window_features})
    cfg["feature_names"] = feature_names(union)
    (d / PIPELINE_FILE).write_text(json.dumps(cfg, indent=2))
    (d / SPEC_FILE).write_text(json.dumps({"hash": DEFAULT_SPEC.hash, "spec": DEFAULT_SPEC.to_dict()}, indent=2))
    (d / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return d


def load_model(model_dir: str | Path, expected_spec: FeatureSpec = DEFAULT_SPEC) -> ModelBundle:
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelLoadError(f"model directory {d} does not exist")
    for name in (MODEL_FILE, SPEC_FILE, PIPELINE_FILE, METADATA_FILE):
        if not (d / name).is_file():
            raise ModelLoadError(f"model directory {d} is missing {name}")
    try:
        spec_doc = json.loads((d / SPEC_FILE).read_text())
        cfg = json.loads((d / PIPELINE_FILE).read_text())
        metadata = json.loads((d / METADATA_FILE).read_text())
        spec = FeatureSpec.from_dict(spec_doc["spec"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"model directory {d}: unreadable {SPEC_FILE}/{PIPELINE_FILE}/{METADATA_FILE}: {err}") from err
    if spec.hash != spec_doc.get("hash"):
        raise ModelLoadError(f"{d / SPEC_FILE} is corrupt: its spec hashes to {spec.hash}, the file says {spec_doc.get('hash')}")
    if spec.hash != expected_spec.hash:
        raise ModelLoadError(
            f"model directory {d} was trained with feature spec hash {spec.hash}, but this code computes "
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
        raise ModelLoadError(f"model directory {d}: cannot load the model files: {err}") from err
    union = FeatureUnion(parts)
    if booster.num_features() != len(cfg["feature_names"]):
        raise ModelLoadError(
            f"model directory {d}: booster expects {booster.num_features()} features, pipeline makes {len(cfg['feature_names'])}"
        )
    return ModelBundle(union, booster, spec, float(cfg["negative_rate"]), metadata)


# ---- training --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    trainer: str = "xgboost"  # or "spark"
    valid_from: str | None = None  # holdout start (UTC); default: the last quarter of the time range
    max_evals: int = 0  # Hyperopt trials; 0 = DEFAULT_PARAMS
    negative_rate: float | None = None  # kept fraction of negatives; None = chosen from the data size
    use_cat2vec: bool = True
    use_window_features: bool = True
    seed: int = 0
    tune_fraction: float = 0.2  # the last part of the training period, for early stopping and tuning
    ablation: bool | None = None  # None = only when the training set is small (< 3M rows)
    params: dict | None = None  # explicit parameters (skip tuning)
    cat2vec: dict = field(default_factory=dict)
    cat2vec_dir: str | None = None  # use these fitted vectors instead of fitting Cat2Vec again
    n_threads: int | None = None


MAX_TRAIN_NEGATIVES = 3_000_000


def choose_negative_rate(n_negatives: int) -> float:
    """Keep every negative up to a few million; beyond, down-sample so that training stays bounded."""
    return 1.0 if n_negatives <= MAX_TRAIN_NEGATIVES else MAX_TRAIN_NEGATIVES / n_negatives


@dataclass
class TimeSplit:
    """Row masks: train (before valid_from) = fit (earlier part) + tune (later part); holdout after."""

    valid_from: int
    tune_from: int
    train: np.ndarray
    fit: np.ndarray
    tune: np.ndarray
    holdout: np.ndarray

    @classmethod
    def of(cls, t: np.ndarray, valid_from: int | None, tune_fraction: float) -> TimeSplit:
        vf = valid_from if valid_from is not None else int(np.quantile(t, 0.75))
        train = t < vf
        if not train.any() or train.all():
            raise ValueError(f"valid_from {pd.Timestamp(vf, unit='s')} leaves no training or no holdout rows")
        tf = int(np.quantile(t[train], 1.0 - tune_fraction))
        fit, tune = train & (t < tf), train & (t >= tf)
        # The contract: no holdout row reaches fitting or tuning.
        assert not (fit & ~train).any() and not (tune & ~train).any() and int(t[fit | tune].max()) < vf
        return cls(vf, tf, train, fit, tune, ~train)


def load_training_frame(input_path: str | Path, engine: str = "vectorized") -> pd.DataFrame:
    """A features Parquet as is, or a click file with features computed over the whole stream first
    (so holdout rows get the history before them)."""
    p = Path(input_path)
    if p.suffix == ".parquet" or p.is_dir():
        import pyarrow.parquet as pq

        names = pq.read_schema(p if p.is_file() else next(p.glob("*.parquet"))).names
        if set(DEFAULT_SPEC.feature_names) <= set(names):
            return pd.read_parquet(p)
    from attribution.data import read_clicks
    from attribution.features import compute_features

    return compute_features(read_clicks(p), engine)


LARGE_ROWS = 5_000_000  # above this, a features Parquet is streamed rather than loaded whole


def is_large_features_file(path: str | Path) -> bool:
    p = Path(path)
    if not (p.suffix == ".parquet" or p.is_dir()):
        return False
    import pyarrow.dataset as ds

    data = ds.dataset(p, format="parquet")
    return set(DEFAULT_SPEC.feature_names) <= set(data.schema.names) and data.count_rows() > LARGE_ROWS


def downsample(mask: np.ndarray, y: np.ndarray, rate: float, seed: int) -> np.ndarray:
    if rate >= 1.0:
        return mask
    keep = (y == 1) | (np.random.default_rng(seed).random(len(y)) < rate)
    return mask & keep


def fit_booster(
    X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, params: dict, seed: int,
    n_threads: int | None = None, rounds: int | None = None,
) -> tuple[xgb.Booster, int]:
    """Early-stopped on the validation part when `rounds` is None; returns the booster and its rounds."""
    dfit = xgb.QuantileDMatrix(X_fit, y_fit)
    p = xgb_params(params, seed, n_threads)
    if rounds is not None:
        return xgb.train(p, dfit, num_boost_round=rounds), rounds
    dval = xgb.QuantileDMatrix(X_val, y_val, ref=dfit)
    booster = xgb.train(
        p, dfit, num_boost_round=int(params.get("max_rounds", 1500)), evals=[(dval, "tune")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS, verbose_eval=False,
    )
    return booster, booster.best_iteration + 1


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str]:
    import gensim
    import sklearn

    return {"python": platform.python_version(), "xgboost": xgb.__version__, "sklearn": sklearn.__version__,
            "gensim": gensim.__version__, "pandas": pd.__version__, "numpy": np.__version__}


def _time_range(t: np.ndarray) -> list[str]:
    return [str(pd.Timestamp(int(t.min()), unit="s")), str(pd.Timestamp(int(t.max()), unit="s"))] if len(t) else []


def train_variant(
    frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float,
    use_window_features: bool, use_cat2vec: bool,
) -> tuple[FeatureUnion, xgb.Booster, int]:
    """Fit Cat2Vec on the training window, early-stop on the tuning part, refit on all training rows."""
    y = frame[LABEL].to_numpy()
    t0 = time.perf_counter()
    union = fitted_features(frame[split.train], cfg, use_window_features, use_cat2vec)
    t1 = time.perf_counter()
    fit_rows = downsample(split.fit, y, negative_rate, cfg.seed)
    _, rounds = fit_booster(
        union.transform(frame[fit_rows]), y[fit_rows], union.transform(frame[split.tune]), y[split.tune],
        params, cfg.seed, cfg.n_threads,
    )
    t2 = time.perf_counter()
    # Refit on the whole training period, with rounds grown for the extra data the tuning part adds.
    rounds = max(1, round(rounds / (1.0 - cfg.tune_fraction)))
    train_rows = downsample(split.train, y, negative_rate, cfg.seed + 1)
    booster, _ = fit_booster(
        union.transform(frame[train_rows]), y[train_rows], None, None, params, cfg.seed, cfg.n_threads, rounds=rounds
    )
    log.info(
        "fit: features %.1fs, early-stopped fit %.1fs, refit %d rounds on %d rows %.1fs",
        t1 - t0, t2 - t1, rounds, int(train_rows.sum()), time.perf_counter() - t2,
    )
    return union, booster, rounds


def fitted_features(train_rows: pd.DataFrame, cfg: TrainConfig, use_window_features: bool, use_cat2vec: bool):
    """The feature union fitted on the training window, reusing Cat2Vec vectors fitted earlier (the
    pipeline's own step) when cfg.cat2vec_dir names them."""
    union = make_features(use_window_features, use_cat2vec, cfg.seed, **cfg.cat2vec)
    if use_cat2vec and cfg.cat2vec_dir:
        union.transformer_list[-1] = ("cat2vec", Cat2Vec.load(cfg.cat2vec_dir))
        return union  # the assembler has nothing to fit
    return union.fit(train_rows)


def fit_cat2vec(features_path: str | Path, output_dir: str | Path, valid_from: str | None = None, seed: int = 0) -> dict:
    """Cat2Vec on the training window of a features file, saved as arrays (the pipeline's own step)."""
    frame = load_training_frame(features_path)
    cfg = TrainConfig(seed=seed)
    split = TimeSplit.of(frame["click_time"].to_numpy(), to_epoch(valid_from), cfg.tune_fraction)
    model = Cat2Vec(seed=seed, **cfg.cat2vec).fit(frame[split.train])
    model.save(output_dir)
    return {"vocabulary": len(model.vocabulary_), "training_rows": int(split.train.sum())}


def resolve_params(cfg: TrainConfig, tune_fn) -> tuple[dict, list[dict] | None]:
    """Explicit parameters, Hyperopt's best (tune_fn() -> (params, trials)), or the defaults."""
    if cfg.params:
        return {**DEFAULT_PARAMS, **cfg.params}, None
    if cfg.max_evals > 0:
        return tune_fn()
    return dict(DEFAULT_PARAMS), None


def finish_training(
    model_dir: str | Path, cfg: TrainConfig, union: FeatureUnion, booster: xgb.Booster, negative_rate: float,
    params: dict, rounds: int, split_info: dict, holdout_y: np.ndarray, holdout_p: np.ndarray,
    holdout_true_p: np.ndarray | None, trials: list[dict] | None, ablation: list[dict] | None, started: float,
) -> dict:
    """Metrics, metadata and the model directory: the same for every trainer."""
    metrics = binary_metrics(holdout_y, holdout_p)
    if holdout_true_p is not None:
        metrics["bayes_roc_auc"] = binary_metrics(holdout_y, holdout_true_p)["roc_auc"]
    metadata = {
        "trainer": cfg.trainer,
        "config": asdict(cfg),
        "params": params,
        "rounds": rounds,
        "negative_rate": negative_rate,
        "feature_spec_hash": DEFAULT_SPEC.hash,
        "feature_names": feature_names(union),
        **split_info,
        "holdout_metrics": metrics,
        "ablation": ablation,
        "feature_importance": {k: float(v) for k, v in booster.get_score(importance_type="gain").items()},
        "versions": library_versions(),
        "git_commit": git_commit(),
        "train_seconds": round(time.perf_counter() - started, 2),
    }
    save_model(model_dir, union, booster, negative_rate, metadata)
    if trials is not None:
        (Path(model_dir) / TRIALS_FILE).write_text(json.dumps(trials, indent=2, default=str))
    log.info(
        "model -> %s: holdout roc_auc=%.4f pr_auc=%.4f (%s, %d rounds, %.0fs)",
        model_dir, metrics["roc_auc"], metrics["pr_auc"], cfg.trainer, rounds, metadata["train_seconds"],
    )
    return metadata


def split_info(split: TimeSplit, t: np.ndarray, y: np.ndarray) -> dict:
    return {
        "valid_from": str(pd.Timestamp(split.valid_from, unit="s")),
        "train_time_range": _time_range(t[split.train]),
        "tune_time_range": _time_range(t[split.tune]),
        "holdout_time_range": _time_range(t[split.holdout]),
        "rows": {"train": int(split.train.sum()), "fit": int(split.fit.sum()), "tune": int(split.tune.sum()),
                 "holdout": int(split.holdout.sum())},
        "positives": {"train": int(y[split.train].sum()), "holdout": int(y[split.holdout].sum())},
    }


def train(input_path: str | Path, model_dir: str | Path, cfg: TrainConfig | None = None) -> dict:
    """Train on clicks before cfg.valid_from and write the model directory; returns its metadata."""
    cfg = cfg or TrainConfig()
    if cfg.trainer == "xgboost" and is_large_features_file(input_path):
        from attribution.train_large import train_large

        return train_large(input_path, model_dir, cfg)
    started = time.perf_counter()
    frame = load_training_frame(input_path)
    if LABEL not in frame:
        raise ValueError(f"{input_path}: training needs the '{LABEL}' column")
    t = frame["click_time"].to_numpy()
    split = TimeSplit.of(t, to_epoch(cfg.valid_from), cfg.tune_fraction)
    y = frame[LABEL].to_numpy()
    n_neg = int((y[split.train] == 0).sum())
    negative_rate = cfg.negative_rate if cfg.negative_rate is not None else choose_negative_rate(n_neg)
    log.info(
        "train: %d rows (%d positives) before %s, holdout %d rows; negative rate %.4f",
        int(split.train.sum()), int(y[split.train].sum()), pd.Timestamp(split.valid_from, unit="s"),
        int(split.holdout.sum()), negative_rate,
    )

    def tune_fn():
        from attribution.tune import tune

        return tune(frame, split, cfg, negative_rate)

    params, trials = resolve_params(cfg, tune_fn)
    if cfg.trainer == "spark":
        from attribution.spark_train import train_variant_spark

        union, booster, rounds = train_variant_spark(frame, split, cfg, params, negative_rate)
    else:
        union, booster, rounds = train_variant(
            frame, split, cfg, params, negative_rate, cfg.use_window_features, cfg.use_cat2vec
        )
    holdout = frame[split.holdout]
    p_hold = ModelBundle(union, booster, DEFAULT_SPEC, negative_rate).predict_proba(holdout)
    ablation = None
    if cfg.ablation or (cfg.ablation is None and int(split.train.sum()) < 3_000_000):
        ablation = run_ablation(frame, split, cfg, params, negative_rate)
    true_p = holdout["true_probability"].to_numpy() if "true_probability" in holdout else None
    return finish_training(
        model_dir, cfg, union, booster, negative_rate, params, rounds, split_info(split, t, y),
        holdout[LABEL].to_numpy(), p_hold, true_p, trials, ablation, started,
    )


ABLATIONS = {
    "ids + hour (baseline)": (False, False),
    "+ window features": (True, False),
    "+ cat2vec": (False, True),
    "full (window + cat2vec)": (True, True),
}


def run_ablation(frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float) -> list[dict]:
    """Holdout metrics of each feature family on and off, same parameters: what each one buys."""
    rows = []
    holdout = frame[split.holdout]
    for name, (window, c2v) in ABLATIONS.items():
        union, booster, rounds = train_variant(frame, split, cfg, params, negative_rate, window, c2v)
        p = ModelBundle(union, booster, DEFAULT_SPEC, negative_rate).predict_proba(holdout)
        rows.append({"variant": name, "window_features": window, "cat2vec": c2v, "rounds": rounds,
                     **binary_metrics(holdout[LABEL].to_numpy(), p)})
    return rows


# ---- batch scoring ------------------------------------------------------------------------------------------
def predict_file(model_dir: str | Path, input_path: str | Path, output_path: str | Path) -> int:
    """Score every click of a file with the model (features over the whole file, time-ordered history)."""
    from attribution.data import read_clicks
    from attribution.features import compute_features

    bundle = load_model(model_dir)
    frame = compute_features(read_clicks(input_path), "vectorized")
    out = pd.DataFrame({"row_id": frame["row_id"].to_numpy()})
    if "click_id" in frame:
        out["click_id"] = frame["click_id"].to_numpy()
    out["probability"] = bundle.predict_proba(frame)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(output_path, index=False)
    return len(out)
