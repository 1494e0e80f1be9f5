"""xgboost.spark: same data, AUC close to the single-node trainer, and a booster the predictor scores
exactly as Spark does."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.features.compute import compute_features
from attribution.features.spec import DEFAULT_SPEC
from attribution.model.bundle import load_model, save_model
from attribution.model.estimators import make_features
from attribution.platform.spark_session import arrow_safe
from attribution.training.config import DEFAULT_PARAMS, TrainConfig
from attribution.training.spark import assemble, fit_spark, model_columns
from attribution.training.train import train
from tests.conftest import SAMPLE_VALID_FROM

pytestmark = pytest.mark.spark


def test_spark_trainer_matches_single_node_auc(spark, sample_path, sample_model, tmp_path):
    _, single = sample_model
    meta = train(sample_path, tmp_path / "spark", TrainConfig(trainer="spark", valid_from=SAMPLE_VALID_FROM, ablation=False))
    assert meta["trainer"] == "spark"
    assert meta["rows"] == single["rows"], "the same data"
    assert abs(meta["holdout_metrics"]["roc_auc"] - single["holdout_metrics"]["roc_auc"]) <= 0.005


def test_spark_booster_scores_identically_in_the_single_node_predictor(spark, sample_clicks, tmp_path):
    frame = compute_features(sample_clicks.head(20_000), "vectorized")
    union = make_features(seed=0, epochs=1, max_fit_rows=20_000).fit(frame)
    sdf = assemble(spark.createDataFrame(arrow_safe(frame[model_columns(DEFAULT_SPEC) + ["is_attributed"]])), union, ("is_attributed",))
    booster, rounds, spark_model = fit_spark(sdf, {**DEFAULT_PARAMS, "learning_rate": 0.3}, seed=0, rounds=20)
    spark_p = np.array([row.probability[1] for row in spark_model.transform(sdf).select("probability").collect()])
    save_model(tmp_path, union, booster, DEFAULT_SPEC, 1.0, {"trainer": "spark"})
    local_p = load_model(tmp_path).predict_proba(frame)
    assert rounds == 20 and booster.num_boosted_rounds() == 20
    np.testing.assert_allclose(local_p, spark_p, rtol=0, atol=1e-6)
