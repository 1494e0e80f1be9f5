"""The one entry point of training: picks the trainer for the input and the configuration.

    train(input, model_dir, TrainConfig())   # features, split, Cat2Vec, tuning, final fit, metrics
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from attribution.features.build import is_large_features_file
from attribution.training.config import TrainConfig


def train(input_path: str | Path, model_dir: str | Path, cfg: TrainConfig | None = None) -> dict:
    """Streaming when a features file is larger than memory allows, in memory otherwise; returns the
    model directory's metadata."""
    cfg = cfg or TrainConfig()
    if cfg.trainer == "xgboost" and is_large_features_file(input_path, cfg.spec):
        from attribution.training.large import train_large

        if cfg.use_cat2vec and not cfg.cat2vec_dir:
            # The streaming trainer only ever holds the down-sampled training rows (positives enriched
            # ~100x): Cat2Vec's corpus comes from the whole training window instead.
            from attribution.training.fit import fit_cat2vec_file

            with tempfile.TemporaryDirectory(prefix="cat2vec-") as tmp:
                fit_cat2vec_file(input_path, tmp, cfg.valid_from, cfg.seed, cfg.cat2vec)
                return train_large(input_path, model_dir, replace(cfg, cat2vec_dir=tmp))
        return train_large(input_path, model_dir, cfg)
    from attribution.training.local import train_in_memory

    return train_in_memory(input_path, model_dir, cfg)
