"""The model: acceptance on the real sample, the time split, the model directory contract, Cat2Vec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from attribution.features.compute import compute_features
from attribution.model.bundle import ModelLoadError, load_model
from attribution.model.cat2vec import Cat2Vec
from attribution.schema import to_epoch
from attribution.training.split import TimeSplit
from tests.conftest import SAMPLE_VALID_FROM


def test_default_pipeline_meets_the_bar_on_the_real_sample(sample_model):
    m = sample_model[1]["holdout_metrics"]
    assert m["rows"] == 28_561 and m["positives"] == 59
    assert m["roc_auc"] >= 0.975, m
    assert m["pr_auc"] >= 0.36, m


def test_no_holdout_row_reaches_training_or_tuning(sample_clicks):
    t = sample_clicks["click_time"].to_numpy()
    vf = to_epoch(SAMPLE_VALID_FROM)
    split = TimeSplit.of(t, vf, 0.2)
    assert t[split.fit].max() < split.tune_from <= t[split.tune].min()
    assert t[split.tune].max() < vf <= t[split.holdout].min()
    assert not (split.train & split.holdout).any() and (split.train | split.holdout).all()
    assert not (split.fit & split.tune).any() and ((split.fit | split.tune) == split.train).all()


def test_metadata_records_the_split(sample_model):
    model_dir, meta = sample_model
    saved = json.loads((model_dir / "metadata.json").read_text())
    assert saved["holdout_metrics"] == meta["holdout_metrics"], "what train() returns is what it saved"
    assert saved["valid_from"] == SAMPLE_VALID_FROM
    assert pd.Timestamp(saved["time_ranges"]["train"][1]) < pd.Timestamp(SAMPLE_VALID_FROM)
    assert pd.Timestamp(saved["time_ranges"]["tune"][1]) < pd.Timestamp(SAMPLE_VALID_FROM)
    assert saved["rows"]["train"] + saved["rows"]["holdout"] == 100_000
    assert saved["versions"]["xgboost"] and saved["feature_spec_hash"]


def test_model_dir_has_no_pickles(sample_model):
    model_dir, _ = sample_model
    names = sorted(p.name for p in model_dir.iterdir())
    assert {"model.json", "feature_spec.json", "metadata.json", "pipeline.json", "cat2vec_vectors.npy",
            "cat2vec_vocab.json"} <= set(names)
    for p in model_dir.iterdir():
        assert p.suffix in {".json", ".npy", ".ubj"}, p
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"


def test_reload_in_a_fresh_process_scores_the_same(sample_model, sample_clicks, tmp_path):
    model_dir, _ = sample_model
    frame = compute_features(sample_clicks, "vectorized")
    holdout = frame[frame["click_time"] >= to_epoch(SAMPLE_VALID_FROM)]
    here = load_model(model_dir).predict_proba(holdout)
    holdout.to_parquet(tmp_path / "holdout.parquet")
    code = (
        "import sys, numpy as np, pandas as pd; from attribution.model.bundle import load_model;"
        "f = pd.read_parquet(sys.argv[2]); np.save(sys.argv[3], load_model(sys.argv[1]).predict_proba(f))"
    )
    subprocess.run([sys.executable, "-c", code, str(model_dir), str(tmp_path / "holdout.parquet"),
                    str(tmp_path / "p.npy")], check=True)
    there = np.load(tmp_path / "p.npy")
    assert len(there) == 28_561
    np.testing.assert_allclose(here, there, rtol=0, atol=1e-6)


def test_predictor_matrix_is_the_unions_own_transform(sample_model, sample_clicks):
    """The predictor writes every step's block into one float32 matrix; it must hold, bit for bit, what the
    fitted FeatureUnion's transform (the training path) gives, unseen ids (NaN vectors) and NaN windows included."""
    bundle = load_model(sample_model[0])
    frame = compute_features(sample_clicks, "vectorized").iloc[::7].reset_index(drop=True)
    frame.loc[::5, "app"] = 60_000  # no such app in the vocabulary
    frame.loc[::11, "ip"] = 9_999_999
    want = bundle.union.transform(frame)
    for rows in (frame, frame.iloc[:1], {c: frame[c].to_numpy() for c in frame.columns}):
        got = bundle.matrix(rows)
        expected = want[: len(got)]
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))
    assert np.isnan(want).any(axis=0).sum() > 5  # the cases that could break: missing vectors and windows


def test_direct_booster_call_equals_inplace_predict(sample_model, sample_clicks):
    """predict_dense makes xgboost's own C call without its Python wrapper: the same scores, bit for bit, for
    one click, a few and many, NaNs included; and a matrix it cannot take is refused, not misread."""
    from attribution.model.dense_predict import predict_dense

    bundle = load_model(sample_model[0])
    matrix = bundle.matrix(compute_features(sample_clicks, "vectorized").iloc[:3000].reset_index(drop=True))
    assert np.isnan(matrix).any()
    for rows in (matrix[:1], matrix[:7], matrix):
        rows = np.ascontiguousarray(rows)
        want = bundle.booster.inplace_predict(rows)
        got = predict_dense(bundle.booster, rows)
        assert got.dtype == np.float32 and got.shape == (len(rows),)
        assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert predict_dense(bundle.booster, matrix[:0]).shape == (0,)
    for wrong in (matrix.astype(np.float64), matrix[:, :-1].copy(), np.asfortranarray(matrix)):
        with pytest.raises(ValueError):
            predict_dense(bundle.booster, wrong)


def test_booster_splits_the_raw_ids_as_categories(sample_model):
    """Every trainer marks app, device, os and channel categorical; the saved booster keeps the types (so
    inplace_predict on the predictor's plain matrix splits them as sets) and does use set splits."""
    from attribution.model.estimators import RAW_ID_FEATURES, feature_names

    bundle = load_model(sample_model[0])
    names = feature_names(bundle.union)
    types = dict(zip(names, bundle.booster.feature_types, strict=True))
    assert {n for n, t in types.items() if t == "c"} == set(RAW_ID_FEATURES)
    trees = [json.loads(tree) for tree in bundle.booster.get_dump(dump_format="json")]

    def set_splits(node: dict) -> int:  # a set split's condition is its list of categories
        own = isinstance(node.get("split_condition"), list)
        assert not own or names[int(node["split"][1:])] in RAW_ID_FEATURES
        return int(own) + sum(set_splits(c) for c in node.get("children", []))

    assert sum(set_splits(t) for t in trees) > 0


def test_spec_hash_mismatch_names_both_hashes(sample_model, tmp_path):
    model_dir, _ = sample_model
    bad = tmp_path / "other_spec"
    shutil.copytree(model_dir, bad)
    doc = json.loads((bad / "feature_spec.json").read_text())
    doc["spec"]["counts"][0]["bands"][0]["end"] = 299  # a different feature definition
    from attribution.features.spec import DEFAULT_SPEC, FeatureSpec

    other = FeatureSpec.from_dict(doc["spec"])
    doc["hash"] = other.hash
    (bad / "feature_spec.json").write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError) as err:
        load_model(bad)
    assert other.hash in str(err.value) and DEFAULT_SPEC.hash in str(err.value)


@pytest.mark.parametrize("damage", ["missing_booster", "corrupt_booster", "corrupt_vectors", "corrupt_json"])
def test_damaged_model_dir_gives_a_clear_error(sample_model, tmp_path, damage):
    model_dir, _ = sample_model
    bad = tmp_path / damage
    shutil.copytree(model_dir, bad)
    if damage == "missing_booster":
        (bad / "model.json").unlink()
        expected = "missing model.json"
    elif damage == "corrupt_booster":
        (bad / "model.json").write_text('{"learner": tru')
        expected = "cannot load the model files"
    elif damage == "corrupt_vectors":
        np.save(bad / "cat2vec_vectors.npy", np.zeros((3, 2), dtype=np.float32))
        expected = "cat2vec vectors have shape"
    else:
        (bad / "pipeline.json").write_text("{not json")
        expected = "unreadable"
    with pytest.raises(ModelLoadError, match=expected):
        load_model(bad)


def test_missing_directory():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("/nonexistent/model")


# ---- Cat2Vec ------------------------------------------------------------------------------------------
def _ids(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({f: rng.integers(0, 30, n) for f in ("ip", "app", "device", "os", "channel")})


def test_cat2vec_save_load_identical_and_deterministic(tmp_path):
    X = _ids(3000, 0)
    a = Cat2Vec(vector_size=4, epochs=2, seed=1).fit(X)
    a.save(tmp_path)
    b = Cat2Vec.load(tmp_path)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = Cat2Vec(vector_size=4, epochs=2, seed=1).fit(X)
    np.testing.assert_array_equal(a.transform(X), c.transform(X))
    assert a.transform(X).shape == (3000, 20)
    assert np.abs(a.transform(X)).sum() > 0


def test_cat2vec_unseen_and_rare_tokens_are_missing():
    """Unseen or rare ids are NaN (XGBoost's missing value), not zeros, which trees would take for a value."""
    X = _ids(2000, 1)
    X.loc[0, "app"] = 999  # seen once: below min_count
    model = Cat2Vec(vector_size=4, epochs=1, min_count=3).fit(X)
    probe = pd.DataFrame({"ip": [5, 12345], "app": [999, 3], "device": [1, 1], "os": [2, 2], "channel": [4, 4]})
    out = model.transform(probe)
    assert np.isnan(out[0, 4:8]).all(), "rare app -> missing"
    assert np.isnan(out[1, 0:4]).all(), "unseen ip -> missing"
    assert np.isfinite(out[0, 0:4]).all() and np.isfinite(out[1, 4:8]).all(), "known tokens get vectors"
    assert (out[0, 0:4] != 0).any() and (out[1, 4:8] != 0).any()



# ---- ablation over seeds ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ablation_gives_each_family_an_interval_and_a_verdict(sample_clicks):
    """Three seeds per variant; the delta is the mean of the paired per-seed differences, its interval a
    t-interval over them, and the verdict follows the interval (the baseline against itself: no effect)."""
    from attribution.evaluation.metrics import effect_of, mean_interval
    from attribution.training.ablation import ABLATIONS, run_ablation
    from attribution.training.config import DEFAULT_PARAMS, TrainConfig

    frame = compute_features(sample_clicks.head(30_000), "vectorized")
    split = TimeSplit.of(frame["click_time"].to_numpy(), None, 0.2)
    cfg = TrainConfig(n_threads=2, cat2vec={"epochs": 1, "vector_size": 4, "max_fit_rows": 20_000}, rounds_floor=0)
    rows = run_ablation(frame, split, cfg, {**DEFAULT_PARAMS, "max_rounds": 20, "learning_rate": 0.3}, 1.0, seeds=3)
    assert [r["variant"] for r in rows] == list(ABLATIONS)
    base = rows[0]
    assert base["effect_roc_auc"] == "no measurable effect" and base["delta_roc_auc_interval"] == [0.0, 0.0]
    for r in rows:
        assert r["seeds"] == 3 and len(r["roc_auc_per_seed"]) == 3
        assert r["roc_auc"] == pytest.approx(np.mean(r["roc_auc_per_seed"]))
        deltas = np.subtract(r["roc_auc_per_seed"], base["roc_auc_per_seed"])
        _, lo, hi = mean_interval(deltas)
        assert r["delta_roc_auc_interval"] == pytest.approx([lo, hi])
        assert r["effect_roc_auc"] == effect_of(lo, hi)
    assert len({round(v, 6) for r in rows[1:] for v in r["roc_auc_per_seed"]}) > 3, "seeds change the fits"


def test_family_ablation_trains_each_variant_on_its_own_spec(sample_clicks):
    """The families beyond the ip: one wide frame, each variant's model reads exactly its spec's features."""
    from attribution.features.spec import DEFAULT_SPEC, FAMILIES, spec_with
    from attribution.training.ablation import family_variants, run_ablation
    from attribution.training.config import DEFAULT_PARAMS, TrainConfig

    variants = family_variants()
    assert list(variants) == ["seed spec (baseline)", "+ campaign", "+ ip_day", "+ campaign + ip_day"]
    assert variants["+ campaign + ip_day"][0] == spec_with(*FAMILIES) and variants["seed spec (baseline)"][0] == DEFAULT_SPEC
    frame = compute_features(sample_clicks.head(15_000), "vectorized", spec=spec_with(*FAMILIES))
    split = TimeSplit.of(frame["click_time"].to_numpy(), None, 0.2)
    cheap = {name: (spec, True, False) for name, (spec, _, _) in list(variants.items())[:2]}  # without Cat2Vec
    rows = run_ablation(frame, split, TrainConfig(n_threads=2, rounds_floor=0),
                        {**DEFAULT_PARAMS, "max_rounds": 10, "learning_rate": 0.3}, 1.0, seeds=2, variants=cheap)
    assert [r["features"] for r in rows] == [len(DEFAULT_SPEC.feature_names), len(spec_with("campaign").feature_names)]
    assert rows[0]["roc_auc_per_seed"] != rows[1]["roc_auc_per_seed"], "the campaign features reach the model"


def test_cat2vec_file_corpus_is_the_training_window_whatever_the_labels(tmp_path):
    """The pipeline's (and the streaming trainer's) Cat2Vec corpus: every training-window click, labels
    unread; a holdout-only id stays unknown, a negatives-only id is known."""
    from attribution.training.fit import fit_cat2vec_file

    X = _ids(3000, 2)
    X["click_time"] = 1_510_000_000 + np.arange(3000, dtype=np.int64) * 10
    X["is_attributed"] = 0
    X.loc[:9, "ip"] = 555                      # early, negatives only
    X.loc[2990:, "ip"] = 999                   # holdout only
    X.to_parquet(tmp_path / "features.parquet")
    vf = pd.Timestamp(int(X["click_time"].iloc[2500]), unit="s").strftime("%Y-%m-%d %H:%M:%S")
    summary = fit_cat2vec_file(tmp_path / "features.parquet", tmp_path / "c2v", vf, cat2vec={"epochs": 1, "vector_size": 4})
    assert summary["training_rows"] == 2500
    vocab = set(Cat2Vec.load(tmp_path / "c2v").vocabulary_)
    assert "ip:555" in vocab and "ip:999" not in vocab


def test_streaming_path_gets_a_label_free_cat2vec(tmp_path, monkeypatch):
    """A large features file trains from down-sampled rows; its Cat2Vec comes from the whole training
    window (an id seen only on negatives is known), fitted before the streaming trainer starts."""
    import attribution.training.train as train_module
    from attribution.training import large
    from attribution.training.config import TrainConfig

    X = _ids(3000, 3)
    X["click_time"] = 1_510_000_000 + np.arange(3000, dtype=np.int64) * 10
    X["is_attributed"] = 0
    X.loc[:9, "ip"] = 555
    X.to_parquet(tmp_path / "features.parquet")
    seen: dict = {}

    def fake_train_large(input_path, model_dir, cfg):
        seen["vocab"] = set(Cat2Vec.load(cfg.cat2vec_dir).vocabulary_)
        return {}

    monkeypatch.setattr(train_module, "is_large_features_file", lambda *a: True)
    monkeypatch.setattr(large, "train_large", fake_train_large)
    train_module.train(tmp_path / "features.parquet", tmp_path / "m", TrainConfig(cat2vec={"epochs": 1, "vector_size": 4}))
    assert "ip:555" in seen["vocab"]


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """Every entry point imports attribution before XGBoost loads libgomp: its threads must not spin on a
    shared node (see attribution/__init__.py); a user's own OMP_WAIT_POLICY is kept."""
    code = "import attribution, os, xgboost; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert got.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert got.strip() == "ACTIVE"
