"""attribution.evaluation.evaluate: metrics.json content and ranges, the self-contained report.html, --from filtering,
the Bayes gap on synthetic data, and the CLI path. One small model (30k rows of the real sample)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attribution.evaluation.evaluate import METRICS_FILE, REPORT_FILE, evaluate
from attribution.model.bundle import load_model
from attribution.training.ablation import ABLATIONS
from attribution.training.config import TrainConfig
from attribution.training.train import train

VALID_FROM = "2017-11-09 00:00:00"
REQUIRED = ("roc_auc", "pr_auc", "log_loss", "rows", "positives", "ece", "reliability", "per_day", "per_app",
            "feature_importance", "ablation", "roc_curve", "confusion_matrix", "from_ts", "time_range")


def _strict_json(path: Path) -> dict:
    def no_nan(name: str) -> float:
        raise AssertionError(f"{path} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=no_nan)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_clicks: pd.DataFrame) -> dict:
    from attribution.io import write_clicks

    d = tmp_path_factory.mktemp("evaluate")
    clicks = write_clicks(sample_clicks.iloc[:30_000], d / "clicks.csv")
    cfg = TrainConfig(valid_from=VALID_FROM, ablation=False, n_threads=2, cat2vec={"epochs": 1, "max_fit_rows": 20_000})
    metadata = train(clicks, d / "model", cfg)
    shutil.copytree(d / "model", d / "model_no_ablation")
    # The ablation (four more fits) would double the fixture's time: give the model an ablation table in
    # train()'s format instead, the full variant being the model itself.
    hm = metadata["holdout_metrics"]
    metadata["ablation"] = [
        {"variant": name, "window_features": w, "cat2vec": c, "rounds": 10 + i,
         **hm, "roc_auc": hm["roc_auc"] - 0.03 * (3 - i), "pr_auc": hm["pr_auc"] * (0.5 + i / 6),
            "log_loss": hm["log_loss"] + 0.001 * (3 - i)}
        for i, (name, (w, c)) in enumerate(ABLATIONS.items())
    ]
    (d / "model" / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    return {"dir": d, "clicks": clicks, "model": d / "model", "metadata": metadata}


@pytest.fixture(scope="module")
def default_eval(trained: dict) -> tuple[dict, Path]:
    out = trained["dir"] / "eval_default"
    return evaluate(trained["model"], trained["clicks"], out), out


def test_metrics_json_keys_and_ranges(trained: dict, default_eval: tuple[dict, Path]) -> None:
    m, out = default_eval
    on_disk = _strict_json(out / METRICS_FILE)
    assert on_disk == m
    for key in REQUIRED:
        assert key in m, key
    assert 0.5 < m["roc_auc"] <= 1.0
    assert 0.0 < m["pr_auc"] <= 1.0
    assert 0.0 < m["log_loss"] < 0.1  # ~0.2% positives: a calibrated model is far below ln 2
    assert 0.0 <= m["ece"] <= 1.0
    assert 0.0 < m["mean_prediction"] < 0.05
    # The default window is the model's holdout: the same rows and metrics as training reported.
    md = trained["metadata"]
    assert m["from_source"] == "model valid_from" and m["from_ts"] == VALID_FROM
    assert m["rows"] == md["rows"]["holdout"] and m["positives"] == md["positives"]["holdout"]
    assert m["roc_auc"] == pytest.approx(md["holdout_metrics"]["roc_auc"], abs=1e-9)
    assert m["rows_before_valid_from"] == 0
    assert m["time_range"][0] >= VALID_FROM
    assert m["input_rows"] == 30_000


def test_reliability_bins_cover_rows_and_give_the_ece(default_eval: tuple[dict, Path]) -> None:
    m, _ = default_eval
    bins = m["reliability"]
    assert len(bins) >= 3, "log-spaced bins spread the predictions over several decades"
    for b in bins:  # each bin holds the predictions between its edges, half a decade apart
        assert b["lower_edge"] <= b["min_predicted"] <= b["max_predicted"] < b["upper_edge"]
        assert b["lower_edge"] == 0.0 or b["upper_edge"] / b["lower_edge"] == pytest.approx(10**0.5)
    assert sum(b["count"] for b in bins) == m["rows"]
    assert sum(b["positives"] for b in bins) == m["positives"]
    means = [b["mean_predicted"] for b in bins]
    assert means == sorted(means)
    for b in bins:
        assert 0.0 <= b["observed_low"] <= b["observed_rate"] <= b["observed_high"] <= 1.0
    ece = sum(b["count"] * abs(b["mean_predicted"] - b["observed_rate"]) for b in bins) / m["rows"]
    assert ece == pytest.approx(m["ece"], rel=1e-9)


def test_per_day_and_per_app(trained: dict) -> None:
    # From a day earlier: two UTC days, the first of which the model trained on (flagged).
    m = evaluate(trained["model"], trained["clicks"], trained["dir"] / "eval_two_days", from_ts="2017-11-08 00:00:00")
    days = m["per_day"]
    assert [d["date"] for d in days] == ["2017-11-08", "2017-11-09"]
    assert sum(d["rows"] for d in days) == m["rows"]
    assert sum(d["positives"] for d in days) == m["positives"]
    assert sum(d["share"] for d in days) == pytest.approx(1.0)
    assert m["rows_before_valid_from"] == days[0]["rows"] > 0
    assert "may have trained on them" in (trained["dir"] / "eval_two_days" / REPORT_FILE).read_text()

    frame = pd.read_csv(trained["clicks"], parse_dates=["click_time"])
    scored = frame[frame["click_time"] >= "2017-11-08 00:00:00"]
    expected = scored["app"].value_counts()
    apps = m["per_app"]
    assert len(apps) == 10
    assert [a["rows"] for a in apps] == expected.iloc[:10].tolist()
    assert [a["app"] for a in apps][:3] == expected.index[:3].tolist()
    assert all(a["positives"] == int(scored.loc[scored["app"] == a["app"], "is_attributed"].sum()) for a in apps)


def test_feature_importance_named(trained: dict, default_eval: tuple[dict, Path]) -> None:
    m, _ = default_eval
    names = set(trained["metadata"]["feature_names"])
    imp = m["feature_importance"]
    assert imp and all(r["feature"] in names for r in imp)
    assert not any(re.fullmatch(r"f\d+", r["feature"]) for r in imp)
    gains = [r["gain"] for r in imp]
    assert gains == sorted(gains, reverse=True)
    assert sum(r["share"] for r in imp) == pytest.approx(1.0)
    raw = load_model(trained["model"]).booster.get_score(importance_type="gain")
    assert len(imp) == len(raw)
    app_idx = trained["metadata"]["feature_names"].index("app")
    if f"f{app_idx}" in raw:
        assert next(r for r in imp if r["feature"] == "app")["gain"] == pytest.approx(raw[f"f{app_idx}"])
    assert sum(m["importance_by_family"].values()) == pytest.approx(1.0)


def test_ablation_deltas_against_baseline(trained: dict, default_eval: tuple[dict, Path]) -> None:
    m, _ = default_eval
    rows = m["ablation"]
    assert [r["variant"] for r in rows] == list(ABLATIONS)
    base = rows[0]
    assert base["variant"] == "ids + hour (baseline)" and base["delta_roc_auc"] == 0.0
    for r in rows:
        for k in ("roc_auc", "pr_auc", "log_loss"):
            assert r[f"delta_{k}"] == pytest.approx(r[k] - base[k])
    assert rows[1]["delta_roc_auc"] == pytest.approx(0.03) and rows[1]["delta_log_loss"] == pytest.approx(-0.001)


def test_model_without_ablation(trained: dict) -> None:
    out = trained["dir"] / "eval_no_ablation"
    m = evaluate(trained["dir"] / "model_no_ablation", trained["clicks"], out)
    assert m["ablation"] is None
    page = (out / REPORT_FILE).read_text()
    assert "trained without the ablation" in page and 'alt="ablation deltas"' not in page


def test_roc_curve_and_confusion_matrix_for_kfp(default_eval: tuple[dict, Path]) -> None:
    m, _ = default_eval
    roc = m["roc_curve"]
    n = len(roc["fpr"])
    assert 2 <= n <= 200 and len(roc["tpr"]) == n and len(roc["thresholds"]) == n
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert all(0.0 <= t <= 1.0 for t in roc["thresholds"])
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(m["roc_auc"], abs=0.02)
    cm = m["confusion_matrix"]
    (tn, fp), (fn, tp) = cm["matrix"]
    assert tn + fp + fn + tp == m["rows"] and fn + tp == m["positives"]
    assert tp > 0
    assert cm["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert cm["categories"] == ["not_attributed", "attributed"]


def test_report_is_self_contained_with_plots_and_tables(default_eval: tuple[dict, Path]) -> None:
    m, out = default_eval
    page = (out / REPORT_FILE).read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    alts = {alt for alt, _ in images}
    assert {"ROC curve", "precision-recall curve", "reliability curve", "feature importance", "ablation deltas"} <= alts
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external assets
    assert "<style>" in page
    assert "Per day (UTC)" in page and "Top 10 apps by clicks" in page
    assert page.count("<table") >= 5  # reliability, per day, per app, ablation, confusion
    assert "ids + hour (baseline)" in page and "Window features" in page and "Cat2Vec" in page
    assert f"{m['roc_auc']:.4f}" in page
    assert str(out.parent / "model") in page  # header names the model directory
    assert "Bayes" not in page  # real data: no Bayes section


def test_from_filters_rows(trained: dict, default_eval: tuple[dict, Path]) -> None:
    m_all, _ = default_eval
    m = evaluate(trained["model"], trained["clicks"], trained["dir"] / "eval_late", from_ts="2017-11-09 06:00:00")
    assert m["from_source"] == "argument"
    assert 0 < m["rows"] < m_all["rows"]
    assert m["time_range"][0] >= "2017-11-09 06:00:00"
    frame = pd.read_csv(trained["clicks"], parse_dates=["click_time"])
    assert m["rows"] == int((frame["click_time"] >= "2017-11-09 06:00:00").sum())
    with pytest.raises(ValueError, match="no clicks"):
        evaluate(trained["model"], trained["clicks"], trained["dir"] / "eval_none", from_ts="2017-11-10 00:00:00")


def test_synthetic_input_gives_bayes_gap(trained: dict) -> None:
    from attribution.io import write_clicks
    from attribution.synth import generate

    clicks = write_clicks(generate(20_000, seed=1, start="2017-11-08 12:00:00", days=1.5), trained["dir"] / "syn.csv")
    out = trained["dir"] / "eval_syn"
    m = evaluate(trained["model"], clicks, out)
    assert m["positives"] > 0
    assert 0.5 < m["bayes_roc_auc"] <= 1.0
    assert m["gap_to_bayes"] == pytest.approx(m["bayes_roc_auc"] - m["roc_auc"])
    frame = pd.read_csv(clicks, parse_dates=["click_time"])
    scored = frame[frame["click_time"] >= VALID_FROM]
    from sklearn.metrics import roc_auc_score

    assert m["bayes_roc_auc"] == pytest.approx(roc_auc_score(scored["is_attributed"], scored["true_probability"]))
    page = (out / REPORT_FILE).read_text()
    assert "Bayes ROC-AUC" in page and "gap to Bayes" in page


def test_feature_parquet_input_matches_click_file(trained: dict, default_eval: tuple[dict, Path]) -> None:
    from attribution.features.build import load_training_frame

    path = trained["dir"] / "features.parquet"
    load_training_frame(trained["clicks"]).to_parquet(path, index=False)
    m = evaluate(trained["model"], path, trained["dir"] / "eval_parquet")
    assert m["rows"] == default_eval[0]["rows"]
    assert m["roc_auc"] == pytest.approx(default_eval[0]["roc_auc"], abs=1e-12)


def test_unlabelled_input_is_refused(trained: dict) -> None:
    path = trained["dir"] / "unlabelled.csv"
    pd.read_csv(trained["clicks"]).drop(columns=["is_attributed", "attributed_time"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="is_attributed"):
        evaluate(trained["model"], path, trained["dir"] / "eval_unlabelled")


def test_cli_evaluate(trained: dict) -> None:
    from attribution.cli import main

    out = trained["dir"] / "eval_cli"
    main(["evaluate", "--model-dir", str(trained["model"]), "--input", str(trained["clicks"]), "--output", str(out),
          "--from", "2017-11-09 03:00:00"])
    m = _strict_json(out / METRICS_FILE)
    assert m["from_ts"] == "2017-11-09 03:00:00" and m["rows"] > 0
    assert (out / REPORT_FILE).stat().st_size > 10_000


# ---- calibration bins and intervals, on data with a known answer --------------------------------------------
def test_log_bins_resolve_the_rare_high_probability_clicks() -> None:
    """At a 0.2% base rate, equal-count bins would put nearly all bins below 1e-3; the log-spaced bins
    give the few high-probability clicks bins of their own, and a miscalibration there shows in the ECE."""
    from attribution.evaluation.metrics import calibration_bins, expected_calibration_error

    rng = np.random.default_rng(0)
    p = np.where(rng.random(200_000) < 0.01, rng.uniform(0.05, 0.5, 200_000), rng.uniform(1e-5, 1e-3, 200_000))
    y = (rng.random(len(p)) < p).astype(int)
    bins = calibration_bins(y, p)
    high = [b for b in bins if b["lower_edge"] >= 1e-2]
    assert len(high) >= 2 and sum(b["count"] for b in high) == int((p >= 1e-2).sum())
    for b in bins:  # calibrated: the truth lies in (nearly) every interval
        assert b["observed_low"] <= b["mean_predicted"] * 1.05 and b["mean_predicted"] * 0.95 <= b["observed_high"]
    calibrated = expected_calibration_error(y, p)
    halved_high = expected_calibration_error(y, np.where(p >= 0.05, p / 2, p))
    assert halved_high > 3 * calibrated, (calibrated, halved_high)


def test_interval_verdicts() -> None:
    from attribution.evaluation.metrics import effect_of, mean_interval

    mean, lo, hi = mean_interval([0.010, 0.012, 0.011])
    assert mean == pytest.approx(0.011) and lo < mean < hi and effect_of(lo, hi) == "helps"
    assert effect_of(lo, hi, higher_is_better=False) == "hurts"
    _, lo, hi = mean_interval([0.004, -0.003, 0.002])
    assert lo < 0 < hi and effect_of(lo, hi) == "no measurable effect"
    _, lo, hi = mean_interval([0.01])
    assert np.isnan(lo) and effect_of(lo, hi) == "no measurable effect"
