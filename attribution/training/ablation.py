"""What each feature family buys: holdout metrics with window features and Cat2Vec on and off, each
variant trained with several seeds (down-sampling, Cat2Vec, XGBoost's row and column sampling), so a
delta comes with a 95% interval of the paired per-seed differences and a verdict: "helps", "hurts" or
"no measurable effect" when the interval covers 0 (on a holdout with a few dozen positives, most do).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from attribution.evaluation.metrics import binary_metrics, effect_of, mean_interval
from attribution.features.spec import FAMILIES, FeatureSpec, spec_with
from attribution.model.bundle import ModelBundle
from attribution.schema import LABEL
from attribution.training.config import TrainConfig
from attribution.training.fit import train_variant
from attribution.training.split import TimeSplit

ABLATIONS = {
    "ids + hour (baseline)": (False, False),
    "+ window features": (True, False),
    "+ cat2vec": (False, True),
    "full (window + cat2vec)": (True, True),
}
ABLATION_SEEDS = 3
# metric -> higher is better
COMPARED = {"roc_auc": True, "pr_auc": True, "log_loss": False}


Variant = tuple[FeatureSpec | None, bool, bool]  # (spec, or None for the run's own; window features; Cat2Vec)


def family_variants(families: tuple[str, ...] = tuple(FAMILIES)) -> dict[str, Variant]:
    """The seed spec against it with each family beyond the ip added, then with all of them."""
    variants: dict[str, Variant] = {"seed spec (baseline)": (spec_with(), True, True)}
    variants.update({f"+ {name}": (spec_with(name), True, True) for name in families})
    if len(families) > 1:
        variants["+ " + " + ".join(families)] = (spec_with(*families), True, True)
    return variants


def run_ablation(
    frame: pd.DataFrame, split: TimeSplit, cfg: TrainConfig, params: dict, negative_rate: float,
    seeds: int = ABLATION_SEEDS, variants: dict[str, Variant] | None = None,
) -> list[dict]:
    """Per variant (default: ABLATIONS on the run's spec): metrics averaged over `seeds` seeds (cfg.seed,
    cfg.seed + 1, ...), same parameters, and against the first variant the mean paired delta, its interval
    and verdict per compared metric."""
    variants = variants or {name: (None, window, c2v) for name, (window, c2v) in ABLATIONS.items()}
    holdout = frame[split.holdout]
    y = holdout[LABEL].to_numpy()
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for k in range(seeds):
        for name, (spec, window, c2v) in variants.items():
            # Cat2Vec refitted per seed as well
            seeded = replace(cfg, seed=cfg.seed + k, cat2vec_dir=None, spec=spec or cfg.spec)
            union, booster, rounds = train_variant(frame, split, seeded, params, negative_rate, window, c2v)
            p = ModelBundle(union, booster, seeded.spec, negative_rate).predict_proba(holdout)
            runs[name].append({"rounds": rounds, **binary_metrics(y, p)})
    base = runs[next(iter(variants))]
    rows = []
    for name, (spec, window, c2v) in variants.items():
        per_seed = runs[name]
        row = {"variant": name, "window_features": window, "cat2vec": c2v, "seeds": seeds,
               "features": len((spec or cfg.spec).feature_names),
               "rounds": round(float(np.mean([r["rounds"] for r in per_seed]))),
               **{k: float(np.mean([r[k] for r in per_seed])) for k in ("roc_auc", "pr_auc", "log_loss", "ece",
                                                                           "mean_prediction")},
               "rows": per_seed[0]["rows"], "positives": per_seed[0]["positives"]}
        for metric, higher in COMPARED.items():
            deltas = [r[metric] - b[metric] for r, b in zip(per_seed, base)]
            _, low, high = mean_interval(deltas)
            row[f"delta_{metric}_interval"] = [low, high]
            row[f"effect_{metric}"] = effect_of(low, high, higher)
            row[f"{metric}_per_seed"] = [r[metric] for r in per_seed]
        rows.append(row)
    return rows
