"""Training from a features file too large to load: down-sampling while reading, holdout scored in batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.features.compute import compute_features
from attribution.model.bundle import load_model
from attribution.training.config import TrainConfig
from attribution.training.large import _uniform, train_large
from attribution.training.split import cap_rows, downsample
from tests.conftest import SAMPLE_VALID_FROM


@pytest.fixture(scope="module")
def features_file(tmp_path_factory, sample_clicks):
    path = tmp_path_factory.mktemp("large") / "features.parquet"
    compute_features(sample_clicks, "vectorized").to_parquet(path, row_group_size=10_000)
    return path


def test_streaming_trainer_downsamples_and_recalibrates(features_file, tmp_path):
    cfg = TrainConfig(valid_from=SAMPLE_VALID_FROM, negative_rate=0.3, cat2vec={"epochs": 2})
    meta = train_large(features_file, tmp_path / "m", cfg, progress=False)
    rows = meta["rows"]
    assert rows["train"] == 71_439 and rows["holdout"] == 28_561
    # every positive kept, ~30% of negatives
    assert 0.27 < (rows["train_sampled"] - meta["positives"]["train"]) / (rows["train"] - meta["positives"]["train"]) < 0.33
    m = meta["holdout_metrics"]
    assert m["rows"] == 28_561 and m["positives"] == 59 and m["roc_auc"] > 0.95
    # re-calibrated: the mean prediction tracks the base rate, not the down-sampled one (~3x higher)
    assert 0.5 * 59 / 28_561 < m["mean_prediction"] < 2.0 * 59 / 28_561
    assert load_model(tmp_path / "m").negative_rate == pytest.approx(0.3)


def test_row_sampling_is_a_function_of_row_id():
    ids = np.arange(200_000)
    u = _uniform(ids, seed=3)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    np.testing.assert_array_equal(u[1000:2000], _uniform(ids[1000:2000], seed=3))
    assert not np.array_equal(u, _uniform(ids, seed=4))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5_000), positive_share=st.floats(0.0, 1.0), cap=st.integers(10, 3_000), seed=st.integers(0, 9))
def test_capped_rows_stay_near_the_cap_and_keep_scarce_positives(n, positive_share, cap, seed):
    rng = np.random.default_rng([seed, 1])  # not cap_rows' own stream
    y = (rng.random(n) < positive_share).astype(np.int8)
    mask = rng.random(n) < 0.8
    kept = cap_rows(mask, y, cap, seed)
    assert not (kept & ~mask).any()
    if mask.sum() <= cap:
        np.testing.assert_array_equal(kept, mask)
        return
    positives, kept_positives = int((mask & (y == 1)).sum()), int((kept & (y == 1)).sum())
    # binomial draws: within 5 sd of the cap
    assert kept.sum() <= cap + 5 * np.sqrt(cap) + 1
    if positives <= cap // 2:
        assert kept_positives == positives
    else:
        assert kept_positives <= cap // 2 + 5 * np.sqrt(cap) + 1
    np.testing.assert_array_equal(kept, cap_rows(mask, y, cap, seed))


def test_capping_a_downsampled_mask_with_the_same_seed_still_caps():
    """The tuning step caps what downsample(seed) kept, with the same seed: the draws must not coincide."""
    y = (np.random.default_rng(5).random(400_000) < 0.003).astype(np.int8)
    kept = downsample(np.ones(len(y), bool), y, 0.5, seed=0)
    capped = cap_rows(kept, y, 50_000, seed=0)
    assert 45_000 < capped.sum() < 55_000 and (capped & (y == 1)).sum() == (kept & (y == 1)).sum()
