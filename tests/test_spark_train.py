"""xgboost.spark at parity with the single-node trainer: same data, same early-stopping metric, the
pipeline's Cat2Vec vectors, a tuning path that runs (Trials here, SparkTrials on Spark), AUC close to the
single-node trainer, and a booster the predictor scores exactly as Spark does."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attribution.evaluation.metrics import binary_metrics
from attribution.features.compute import compute_features
from attribution.features.spec import DEFAULT_SPEC
from attribution.model.bundle import TRIALS_FILE, load_model, save_model
from attribution.model.cat2vec import Cat2Vec
from attribution.model.estimators import feature_types, make_features
from attribution.platform.spark_session import arrow_safe
from attribution.schema import CLICK_TIME, LABEL, to_epoch
from attribution.training.booster import EARLY_STOPPING_METRIC, xgb_params
from attribution.training.config import DEFAULT_PARAMS, TrainConfig
from attribution.training.split import TimeSplit
from attribution.training.train import train
from attribution.training.tune import SPACE, startup_trials, tune
from tests.conftest import SAMPLE_VALID_FROM

SMALL_C2V = {"epochs": 1, "vector_size": 4, "max_fit_rows": 20_000}
TUNE_EVALS = 4


@pytest.fixture(scope="module")
def small_frame(sample_clicks) -> pd.DataFrame:
    """The first 40k real-sample clicks with their features: ~1.5 days, enough positives to tune on."""
    return compute_features(sample_clicks.head(40_000), "vectorized")


def _tuned(frame: pd.DataFrame, cfg: TrainConfig) -> tuple[dict, list[dict]]:
    t = frame[CLICK_TIME].to_numpy()
    return tune(frame, TimeSplit.of(t, None, cfg.tune_fraction), cfg, negative_rate=1.0)


def _check_trials(params: dict, trials: list[dict]) -> None:
    assert len(trials) == TUNE_EVALS
    assert all(np.isfinite(r["loss"]) and -1.0 <= r["loss"] <= 0.0 and r["rounds"] >= 1 for r in trials), trials
    # A trial may learn nothing from the tuning part's ~10 positives (AUC 0.5), the best must learn.
    assert min(r["loss"] for r in trials) < -0.7, trials
    assert set(SPACE) <= set(params) and 0 <= params["max_delta_step"] <= 10
    best = min(trials, key=lambda r: r["loss"])["params"]
    assert best["max_depth"] == params["max_depth"] and best["max_delta_step"] == params["max_delta_step"]


def test_trials_share_one_capped_sample(small_frame, monkeypatch):
    """Every trial fits on at most TUNE_FIT_ROWS rows and scores at most TUNE_EVAL_ROWS, built once: the
    tuning step costs the same at any data size."""
    from attribution.training import tune as tune_module

    built: list[tuple[int, int, float]] = []
    real = tune_module.quantile_matrices

    def spy(X_fit, y_fit, X_val, y_val, types):
        built.append((len(X_fit), len(X_val), float(y_fit.sum())))
        return real(X_fit, y_fit, X_val, y_val, types)

    monkeypatch.setattr(tune_module, "quantile_matrices", spy)
    monkeypatch.setattr(tune_module, "TUNE_FIT_ROWS", 6_000)
    monkeypatch.setattr(tune_module, "TUNE_EVAL_ROWS", 3_000)
    cfg = TrainConfig(max_evals=3, cat2vec=SMALL_C2V, n_threads=2)
    _, trials = _tuned(small_frame, cfg)
    assert len(trials) == 3 and len(built) == 1, built
    fit_rows, eval_rows, fit_positives = built[0]
    split = TimeSplit.of(small_frame[CLICK_TIME].to_numpy(), None, cfg.tune_fraction)
    y = small_frame[LABEL].to_numpy()
    assert 5_000 <= fit_rows <= 6_600 and 2_500 <= eval_rows <= 3_300, built
    assert fit_positives == y[split.fit].sum()  # every positive kept: they are under half of the cap


def test_patience_scales_with_the_learning_rate():
    from attribution.training.config import EARLY_STOPPING_ROUNDS, early_stopping_rounds

    patience = [early_stopping_rounds({"learning_rate": lr}) for lr in (0.01, 0.05, 0.1, 0.3)]
    assert patience == [EARLY_STOPPING_ROUNDS, EARLY_STOPPING_ROUNDS, EARLY_STOPPING_ROUNDS // 2, 20]


def test_tpe_starts_after_a_third_of_the_trials():
    assert [startup_trials(n) for n in (1, 3, 20, 60, 200)] == [1, 1, 6, 20, 20]


def test_every_trainer_early_stops_on_the_same_metric():
    from attribution.training.spark import spark_params

    assert xgb_params(DEFAULT_PARAMS, 0)["eval_metric"][-1] == EARLY_STOPPING_METRIC == "auc"
    assert spark_params(DEFAULT_PARAMS, 0)["eval_metric"] == EARLY_STOPPING_METRIC


@pytest.mark.slow
def test_tune_runs_trials_on_the_single_node_trainer(small_frame):
    cfg = TrainConfig(max_evals=TUNE_EVALS, cat2vec=SMALL_C2V, n_threads=2)
    _check_trials(*_tuned(small_frame, cfg))


@pytest.mark.spark
@pytest.mark.slow
def test_tune_runs_trials_on_spark_trials(spark, small_frame):
    from attribution.training.tune import spark_trials_plan

    parallelism, threads = spark_trials_plan(TUNE_EVALS)
    assert parallelism == 2 and threads == 1, "local[2]: two trials at once, one thread each"
    cfg = TrainConfig(trainer="spark", max_evals=TUNE_EVALS, cat2vec=SMALL_C2V)
    _check_trials(*_tuned(small_frame, cfg))


@pytest.mark.spark
@pytest.mark.slow
def test_spark_job_tunes_and_uses_the_pipelines_cat2vec(spark, small_frame, tmp_path):
    """The cluster path from a features Parquet: tuning runs (it used to fail on a split with no holdout)
    and the model carries the pipeline's Cat2Vec vectors unchanged."""
    from attribution.training.spark import holdout_scores_uri, train_from_parquet

    features = tmp_path / "features.parquet"
    small_frame.to_parquet(features)
    t = small_frame[CLICK_TIME].to_numpy()
    vf = pd.Timestamp(int(np.quantile(t, 0.75)), unit="s").strftime("%Y-%m-%d %H:%M:%S")
    c2v = Cat2Vec(seed=3, **SMALL_C2V).fit(small_frame[t < to_epoch(vf)])
    c2v.save(tmp_path / "cat2vec")
    meta = train_from_parquet(str(features), tmp_path / "model", TrainConfig(
        trainer="spark", valid_from=vf, max_evals=2, cat2vec_dir=str(tmp_path / "cat2vec"), ablation=False))
    trials = json.loads((tmp_path / "model" / TRIALS_FILE).read_text())
    assert len(trials) == 2 and meta["holdout_metrics"]["roc_auc"] > 0.8
    used = load_model(tmp_path / "model").union.transformer_list[-1][1]
    np.testing.assert_array_equal(used.vectors_, c2v.vectors_)
    assert used.vocabulary_ == c2v.vocabulary_
    # The scored holdout was written by the executors beside the model (not in it: the storage initializer
    # downloads the model's whole folder), one part per partition; the metrics are those rows' metrics.
    scores = pd.read_parquet(holdout_scores_uri(tmp_path / "model"))
    holdout = small_frame[t >= to_epoch(vf)]
    assert meta["holdout_scores"] == holdout_scores_uri(tmp_path / "model")
    assert not (tmp_path / "model" / "part-00000.parquet").exists()
    assert sorted(scores["row_id"]) == sorted(holdout["row_id"]) and meta["rows"]["holdout"] == len(holdout)
    expected = load_model(tmp_path / "model").predict_proba(holdout.set_index("row_id").loc[scores["row_id"]].reset_index())
    np.testing.assert_allclose(scores["probability"], expected, rtol=0, atol=1e-6)
    assert meta["holdout_metrics"] == pytest.approx(binary_metrics(scores["is_attributed"], scores["probability"]), nan_ok=True)


@pytest.mark.spark
def test_spark_trainer_matches_single_node_auc(spark, sample_path, sample_model, tmp_path):
    _, single = sample_model
    meta = train(sample_path, tmp_path / "spark", TrainConfig(trainer="spark", valid_from=SAMPLE_VALID_FROM, ablation=False))
    assert meta["trainer"] == "spark"
    assert meta["rows"] == single["rows"], "the same data"
    assert abs(meta["holdout_metrics"]["roc_auc"] - single["holdout_metrics"]["roc_auc"]) <= 0.005


@pytest.mark.spark
def test_spark_booster_scores_identically_in_the_single_node_predictor(spark, sample_clicks, tmp_path):
    from attribution.training.spark import assemble, fit_spark, model_columns

    frame = compute_features(sample_clicks.head(20_000), "vectorized")
    union = make_features(seed=0, epochs=1, max_fit_rows=20_000).fit(frame)
    sdf = assemble(spark.createDataFrame(arrow_safe(frame[model_columns(DEFAULT_SPEC) + ["is_attributed"]])), union, ("is_attributed",))
    booster, rounds, spark_model = fit_spark(sdf, {**DEFAULT_PARAMS, "learning_rate": 0.3}, seed=0, rounds=20,
                                             feature_types=feature_types(union))
    spark_p = np.array([row.probability[1] for row in spark_model.transform(sdf).select("probability").collect()])
    save_model(tmp_path, union, booster, DEFAULT_SPEC, 1.0, {"trainer": "spark"})
    local_p = load_model(tmp_path).predict_proba(frame)
    assert rounds == 20 and booster.num_boosted_rounds() == 20
    np.testing.assert_allclose(local_p, spark_p, rtol=0, atol=1e-6)
