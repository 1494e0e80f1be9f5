"""XGBoost parameters and the early-stopped fit that every trainer and Hyperopt trial runs."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from attribution.training.config import early_stopping_rounds

# Every trainer early-stops on this (the last of eval_metric is the one XGBoost watches): AUC ignores the
# class balance, so down-sampled training rows and full-balance validation rows agree on it.
EARLY_STOPPING_METRIC = "auc"


def xgb_params(params: dict, seed: int, n_threads: int | None = None) -> dict:
    return {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", EARLY_STOPPING_METRIC],
        "tree_method": "hist",
        "max_depth": int(params["max_depth"]),
        "learning_rate": float(params["learning_rate"]),
        "min_child_weight": float(params["min_child_weight"]),
        "subsample": float(params["subsample"]),
        "colsample_bytree": float(params["colsample_bytree"]),
        "reg_alpha": float(params["reg_alpha"]),
        "reg_lambda": float(params["reg_lambda"]),
        "max_delta_step": float(params.get("max_delta_step", 0.0)),
        "max_cat_threshold": int(params.get("max_cat_threshold", 64)),
        "seed": seed,
        **({"nthread": n_threads} if n_threads else {}),
    }


def fit_booster(
    X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray | None, y_val: np.ndarray | None, params: dict,
    seed: int, n_threads: int | None = None, rounds: int | None = None, feature_types: list[str] | None = None,
) -> tuple[xgb.Booster, int]:
    """Early-stopped on the validation part when `rounds` is None; returns the booster and its rounds.
    feature_types (model.estimators.feature_types): "c" marks a categorical column; the booster keeps the
    types, so inplace_predict on a plain matrix splits those columns as categories too."""
    if rounds is not None:
        dfit = xgb.QuantileDMatrix(X_fit, y_fit, **_typed(feature_types))
        return xgb.train(xgb_params(params, seed, n_threads), dfit, num_boost_round=rounds), rounds
    return fit_early_stopped(*quantile_matrices(X_fit, y_fit, X_val, y_val, feature_types), params, seed, n_threads)


def _typed(feature_types: list[str] | None) -> dict:
    return {"feature_types": feature_types, "enable_categorical": True} if feature_types else {}


def quantile_matrices(
    X_fit: np.ndarray, y_fit: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, feature_types: list[str] | None,
) -> tuple[xgb.QuantileDMatrix, xgb.QuantileDMatrix]:
    """The fit part's quantised matrix and the validation part's, binned on the fit part's cuts."""
    dfit = xgb.QuantileDMatrix(X_fit, y_fit, **_typed(feature_types))
    return dfit, xgb.QuantileDMatrix(X_val, y_val, ref=dfit, **_typed(feature_types))


def fit_early_stopped(
    dfit: xgb.DMatrix, dval: xgb.DMatrix, params: dict, seed: int, n_threads: int | None = None,
) -> tuple[xgb.Booster, int]:
    """Early-stopped on dval; for callers that fit many times on the same matrices (Hyperopt's trials): the
    quantile sketch of a few hundred thousand rows costs as much as a short fit."""
    booster = xgb.train(
        xgb_params(params, seed, n_threads), dfit, num_boost_round=int(params.get("max_rounds", 1500)),
        evals=[(dval, "tune")], early_stopping_rounds=early_stopping_rounds(params), verbose_eval=False,
    )
    return booster, booster.best_iteration + 1
