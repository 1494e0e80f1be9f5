"""The model's feature transformers: raw ids, hour and window features (FeatureAssembler) beside Cat2Vec
vectors (model.cat2vec), joined by a scikit-learn FeatureUnion whose matrix feeds a native XGBoost booster.
The booster is trained by attribution.training and applied by attribution.model.bundle."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion

from attribution.features.spec import DEFAULT_SPEC, FeatureSpec
from attribution.model.cat2vec import Cat2Vec
from attribution.schema import ID_FIELDS

# ip is a key of the window features, not a feature itself: millions of values, most seen once.
RAW_ID_FEATURES: tuple[str, ...] = tuple(f for f in ID_FIELDS if f != "ip")


class FeatureAssembler(BaseEstimator, TransformerMixin):
    """Raw ids and hour of day, plus the window features log-scaled (as the seed did); NaN stays NaN
    (XGBoost learns a direction for "no earlier click")."""

    def __init__(self, spec_json: str = DEFAULT_SPEC.to_json(), use_window_features: bool = True) -> None:
        self.spec_json = spec_json
        self.use_window_features = use_window_features

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureAssembler:
        return self

    def spec(self) -> FeatureSpec:
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
            spec = self.spec()
            window = spec.count_names + spec.distinct_names + spec.since_previous_names
            cached = (key, list(RAW_ID_FEATURES) + spec.hour_names, window if self.use_window_features else [])
            self.__dict__["_cols"] = cached
        return cached[1], cached[2]

    def transform(self, X: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """X: a frame, or column name -> array (the predictor's path, which skips pandas per request)."""
        n = len(X[ID_FIELDS[0]])
        return self.transform_into(X, np.empty((n, len(self.feature_names())), dtype=np.float32))

    def transform_into(self, X: pd.DataFrame | Mapping[str, np.ndarray], out: np.ndarray) -> np.ndarray:
        """transform() written into `out` (n x feature_names(), float32, a block of a wider matrix)."""
        plain, logged = self._columns()
        for j, f in enumerate(plain):
            out[:, j] = X[f]  # cast to float32 on assignment, as np.asarray(..., float32) does
        if logged:  # one cast and one log1p over all window columns: the same float32 values, column by column
            window = np.column_stack([X[name] for name in logged]).astype(np.float32)
            out[:, len(plain) :] = np.log1p(window, out=window)
        return out


def make_features(
    spec: FeatureSpec = DEFAULT_SPEC, use_window_features: bool = True, use_cat2vec: bool = True, seed: int = 0,
    **c2v: object,
) -> FeatureUnion:
    """The unfitted feature union for a spec: the assembler, and Cat2Vec when asked."""
    parts = [("assemble", FeatureAssembler(spec.to_json(), use_window_features))]
    if use_cat2vec:
        parts.append(("cat2vec", Cat2Vec(seed=seed, **c2v)))
    return FeatureUnion(parts)


def feature_names(union: FeatureUnion) -> list[str]:
    return [n for _, step in union.transformer_list for n in step.feature_names()]


def feature_types(union: FeatureUnion) -> list[str]:
    """XGBoost's type per column of the union's matrix: the raw ids are categorical ("c"), everything else
    numeric ("q"). An id's number carries no order: as a number, the few hundred apps whose conversion
    differs tenfold need a split for every run of ids; as a category, one split partitions them
    (bench/bayes_gap.py measures the gain)."""
    return ["c" if n in RAW_ID_FEATURES else "q" for n in feature_names(union)]


def recalibrate(p: np.ndarray, negative_rate: float) -> np.ndarray:
    """Undo negative down-sampling: odds scale by the kept fraction of negatives."""
    if negative_rate >= 1.0:
        return p
    return p * negative_rate / (p * negative_rate + (1.0 - p))
