"""report.html from an evaluation's metrics (attribution.evaluation.evaluate): one self-contained file, plots as
base64 PNGs (matplotlib Agg), inline CSS, no external assets. `render_report(metrics)` needs only the
metrics.json content, so a report can be rebuilt from a stored metrics.json."""

from __future__ import annotations

import base64
import html
import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

FAMILY_COLORS = {"ids": "#4c72b0", "hour": "#8172b2", "window": "#dd8452", "cat2vec": "#55a868"}
MODEL_COLOR, BAYES_COLOR, GOOD, BAD = "#1f5fa8", "#888888", "#1a7f37", "#c62828"
TOP_FEATURES = 25

CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  background:#f5f6f8;color:#1d2330}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #dde1e7;
  padding-bottom:6px} .sub{color:#5b6475;font-size:13px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;font-size:13px;margin-top:12px;
  background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:12px 16px}
.meta dt{color:#5b6475} .meta dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(140px,1fr));gap:12px;margin-top:18px}
.card{background:#fff;border:1px solid #e2e5ea;border-radius:10px;padding:12px 14px}
.card .label{font-size:12px;color:#5b6475;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:26px;font-weight:600;margin-top:2px} .card .note{font-size:12px;color:#5b6475;margin-top:2px}
.card.accent{border-left:4px solid #1f5fa8}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.fig{background:#fff;border:1px solid #e2e5ea;border-radius:10px;padding:8px;text-align:center}
.fig img{max-width:100%;height:auto}
table{border-collapse:collapse;background:#fff;font-size:13px;width:100%;border:1px solid #e2e5ea}
th,td{padding:6px 10px;text-align:right;border-bottom:1px solid #eceef2} th{background:#eef1f5;font-weight:600}
th:first-child,td:first-child{text-align:left} tr:nth-child(even) td{background:#fafbfc}
.good{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:600} .muted{color:#8a93a3}
.callout{background:#fff;border:1px solid #e2e5ea;border-left:4px solid #dd8452;border-radius:8px;
  padding:10px 14px;margin:10px 0;font-size:14px}
.warn{border-left-color:#c62828}
"""


# ---- formatting ------------------------------------------------------------------------------------------
def _f(v: object, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v != 0 and abs(v) < 10 ** -digits:
            return f"{v:.2e}"
        return f"{v:.{digits}f}"
    return html.escape(str(v))


def _pct(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}%"


def _delta(v: float | None, higher_is_better: bool = True, digits: int = 4) -> str:
    if v is None:
        return "—"
    if abs(v) < 0.5 * 10 ** -digits:
        return f'<span class="muted">±{0:.{digits}f}</span>'
    good = (v > 0) == higher_is_better
    return f'<span class="{"good" if good else "bad"}">{v:+.{digits}f}</span>'


def _e(s: object) -> str:
    return html.escape("" if s is None else str(s))


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<div class="fig"><img alt="{_e(alt)}" src="data:image/png;base64,{b64}"></div>'


# ---- plots ---------------------------------------------------------------------------------------------------
def _style(ax: plt.Axes) -> None:
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def roc_plot(m: dict) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    roc = m["roc_curve"]
    ax.plot(roc["fpr"], roc["tpr"], color=MODEL_COLOR, lw=2, label=f"model  AUC {_f(m['roc_auc'])}")
    if m.get("bayes_roc_curve"):
        b = m["bayes_roc_curve"]
        ax.plot(b["fpr"], b["tpr"], color=BAYES_COLOR, lw=1.5, ls="--", label=f"Bayes (true p)  AUC {_f(m['bayes_roc_auc'])}")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls=":", label="chance")
    cm = m.get("confusion_matrix")
    if cm:
        (tn, fp), (fn, tp) = cm["matrix"]
        ax.plot([fp / max(fp + tn, 1)], [tp / max(tp + fn, 1)], "o", color=BAD, ms=6,
                label=f"best-F1 threshold {cm['threshold']:.3g}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC curve")
    ax.legend(loc="lower right", fontsize=9)
    _style(ax)
    return _png(fig)


def pr_plot(m: dict) -> str:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    pr = m["pr_curve"]
    ax.step(pr["recall"], pr["precision"], where="post", color=MODEL_COLOR, lw=2, label=f"model  AP {_f(m['pr_auc'])}")
    if m.get("bayes_pr_curve"):
        b = m["bayes_pr_curve"]
        ax.step(b["recall"], b["precision"], where="post", color=BAYES_COLOR, lw=1.5, ls="--",
                label=f"Bayes (true p)  AP {_f(m['bayes_pr_auc'])}")
    ax.axhline(m["positive_rate"], color="#bbbbbb", lw=1, ls=":", label=f"base rate {_pct(m['positive_rate'])}")
    # Zoom on the curve: sklearn's (recall 0, precision 1) end point would squash rare-positive curves.
    curves = [pr] + ([m["bayes_pr_curve"]] if m.get("bayes_pr_curve") else [])
    seen = [p for c in curves for p, r in zip(c["precision"], c["recall"]) if r > 0]
    top = min(1.01, max(seen + [m["positive_rate"]]) * 1.2) if seen else 1.01
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, top), title="Precision–recall curve")
    ax.legend(loc="upper right", fontsize=9)
    _style(ax)
    return _png(fig)


def calibration_plot(m: dict) -> str:
    """Reliability on log-log axes (attribution rates are ~0.25%, so linear axes hide every bin but
    the last); bins with no positive drawn as open triangles on the floor."""
    pts = m["reliability"]
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    xs = [r["mean_predicted"] for r in pts]
    positive = [r["observed_rate"] for r in pts if r["observed_rate"] > 0] + [x for x in xs if x > 0]
    floor = min(positive) / 3 if positive else 1e-5
    top = max([r.get("observed_high") or 0 for r in pts] + xs + [floor * 10]) * 1.5
    ax.plot([floor, top], [floor, top], color="#bbbbbb", lw=1, ls=":", label="perfectly calibrated")
    for r in pts:
        x = max(r["mean_predicted"], floor)
        lo, hi = max(r.get("observed_low") or floor, floor), max(r.get("observed_high") or floor, floor)
        ax.plot([x, x], [lo, hi], color=MODEL_COLOR, alpha=0.35, lw=2)
    hit = [r for r in pts if r["observed_rate"] > 0]
    miss = [r for r in pts if r["observed_rate"] == 0]
    ax.plot([max(r["mean_predicted"], floor) for r in hit], [r["observed_rate"] for r in hit], "o-",
            color=MODEL_COLOR, ms=6, label="observed rate (95% interval)")
    if miss:
        ax.plot([max(r["mean_predicted"], floor) for r in miss], [floor] * len(miss), "v", mfc="white",
                color=MODEL_COLOR, ms=7, label="bin with no positives")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlim=(floor, top), ylim=(floor * 0.8, top), xlabel="mean predicted probability (per bin)",
           ylabel="observed attribution rate",
           title=f"Calibration: {len(pts)} log-spaced bins, ECE {_f(m['ece'], 5)}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)
    _style(ax)
    return _png(fig)


def importance_plot(m: dict) -> str | None:
    rows = m.get("feature_importance") or []
    if not rows:
        return None
    rows = rows[:TOP_FEATURES][::-1]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(rows) + 1.4))
    ax.barh([r["feature"] for r in rows], [100 * r["share"] for r in rows],
            color=[FAMILY_COLORS.get(r["family"], "#999999") for r in rows])
    fam = m.get("importance_by_family") or {}
    handles = [Patch(color=c, label=f"{f} ({100 * fam.get(f, 0):.0f}% of gain)") for f, c in FAMILY_COLORS.items() if f in fam]
    ax.legend(handles=handles, loc="lower right", fontsize=9, title="feature family")
    ax.set(xlabel="share of total gain (%)", title=f"Feature importance (gain), top {len(rows)}")
    ax.tick_params(axis="y", labelsize=9)
    _style(ax)
    ax.grid(axis="y", visible=False)
    return _png(fig)


def ablation_plot(rows: list[dict]) -> str | None:
    variants = [r for r in rows if "delta_roc_auc" in r][1:] if rows else []
    if not variants:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.5 * len(variants) + 1.6), sharey=True)
    names = [r["variant"] for r in variants][::-1]
    for ax, (key, label, higher) in zip(axes, [("delta_roc_auc", "Δ ROC-AUC", True), ("delta_pr_auc", "Δ PR-AUC", True),
                                               ("delta_log_loss", "Δ log loss (lower is better)", False)]):
        vals = [r.get(key) or 0.0 for r in variants][::-1]
        ax.barh(names, vals, color=[GOOD if (v > 0) == higher else BAD for v in vals])
        ax.axvline(0, color="#333333", lw=1)
        ax.set_title(label, fontsize=11)
        _style(ax)
        ax.grid(axis="y", visible=False)
        span = max(abs(v) for v in vals) or 1e-6
        ax.set_xlim(-span * 1.8, span * 1.8)
        ax.xaxis.set_major_locator(MaxNLocator(4, symmetric=True))
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:+.4f} ", va="center", ha="left" if v >= 0 else "right", fontsize=8)
    fig.tight_layout()
    return _png(fig)


# ---- tables --------------------------------------------------------------------------------------------------
def _metric_table(rows: list[dict], key: str, key_label: str) -> str:
    head = (f"<tr><th>{_e(key_label)}</th><th>clicks</th><th>share</th><th>positives</th><th>rate</th><th>ROC-AUC</th>"
            "<th>PR-AUC</th><th>log loss</th><th>ECE</th><th>mean pred.</th></tr>")
    body = "".join(
        f"<tr><td>{_e(r[key])}</td><td>{_f(r['rows'])}</td><td>{_pct(r.get('share'), 1)}</td><td>{_f(r['positives'])}</td>"
        f"<td>{_pct(r.get('positive_rate'))}</td><td>{_f(r['roc_auc'])}</td><td>{_f(r['pr_auc'])}</td>"
        f"<td>{_f(r['log_loss'])}</td><td>{_f(r['ece'], 5)}</td><td>{_pct(r['mean_prediction'])}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _interval(iv: list | None) -> str:
    if not iv or any(v is None or not np.isfinite(v) for v in iv):
        return ""
    return f"[{iv[0]:+.4f}, {iv[1]:+.4f}]"


def _effect(r: dict) -> str:
    """The verdict on ROC-AUC: only an interval that excludes 0 is an effect (one seed gives none)."""
    effect = r.get("effect_roc_auc")
    return _e(effect) if effect else "no interval (one seed): no measurable effect claimed"


def ablation_section(rows: list[dict] | None) -> str:
    if not rows:
        return ('<h2>Ablation</h2><p class="sub">The model was trained without the ablation '
                "(train with ablation on to see what each feature family buys).</p>")
    head = ("<tr><th>variant</th><th>window</th><th>cat2vec</th><th>rounds</th><th>ROC-AUC</th><th>Δ</th>"
            "<th>PR-AUC</th><th>Δ</th><th>log loss</th><th>Δ</th></tr>")
    body = "".join(
        f"<tr><td>{_e(r.get('variant'))}</td><td>{_f(r.get('window_features'))}</td><td>{_f(r.get('cat2vec'))}</td>"
        f"<td>{_f(r.get('rounds'))}</td><td>{_f(r.get('roc_auc'))}</td><td>{_delta(r.get('delta_roc_auc'))}</td>"
        f"<td>{_f(r.get('pr_auc'))}</td><td>{_delta(r.get('delta_pr_auc'))}</td><td>{_f(r.get('log_loss'))}</td>"
        f"<td>{_delta(r.get('delta_log_loss'), higher_is_better=False)}</td></tr>"
        for r in rows
    )
    by = {r.get("variant"): r for r in rows}
    lines = []
    for variant, what in (("+ window features", "Window features"), ("+ cat2vec", "Cat2Vec"),
                          ("full (window + cat2vec)", "Both together")):
        r = by.get(variant)
        if r and r.get("delta_roc_auc") is not None:
            lines.append(f"<li><b>{what}</b>: {_effect(r)} (ROC-AUC {_delta(r['delta_roc_auc'])} "
                         f"{_interval(r.get('delta_roc_auc_interval'))}), PR-AUC {_delta(r.get('delta_pr_auc'))} "
                         f"{_interval(r.get('delta_pr_auc_interval'))}, log loss "
                         f"{_delta(r.get('delta_log_loss'), higher_is_better=False)} "
                         f"{_interval(r.get('delta_log_loss_interval'))} vs the baseline</li>")
    n = rows[0].get("rows")
    p = rows[0].get("positives")
    plot = ablation_plot(rows)
    return (
        "<h2>Ablation: what each feature family buys</h2>"
        f'<p class="sub">Same parameters, each variant refit at training time and scored on the training run\'s '
        f"holdout ({_f(n)} clicks, {_f(p)} positives); deltas are against “ids + hour (baseline)”, each the mean of {_f(rows[0].get('seeds', 1))} seed(s) with the 95% interval of the paired differences; an interval that covers 0 is “no measurable effect”.</p>"
        f'<div class="callout"><ul style="margin:4px 0;padding-left:18px">{"".join(lines)}</ul></div>'
        + (_img(plot, "ablation deltas") if plot else "")
        + f'<div style="margin-top:10px"><table>{head}{body}</table></div>'
    )


# ---- the page ------------------------------------------------------------------------------------------------
def _card(label: str, value: str, note: str = "", accent: bool = False) -> str:
    return (f'<div class="card{" accent" if accent else ""}"><div class="label">{label}</div>'
            f'<div class="value">{value}</div><div class="note">{note}</div></div>')


def _range(r: list | None) -> str:
    return f"{_e(r[0])} → {_e(r[1])}" if r else "—"


def render_report(m: dict) -> str:
    model = m.get("model") or {}
    train_m = model.get("holdout_metrics") or {}

    def at_train(key: str, digits: int = 4) -> str:
        return f"at training: {_f(train_m.get(key), digits)}" if train_m.get(key) is not None else ""

    cards = [
        _card("ROC-AUC", _f(m["roc_auc"]), at_train("roc_auc"), accent=True),
        _card("PR-AUC", _f(m["pr_auc"]), f"base rate {_pct(m['positive_rate'])}", accent=True),
        _card("log loss", _f(m["log_loss"], 5), at_train("log_loss", 5)),
        _card("ECE", _f(m["ece"], 5), f"mean pred. {_pct(m['mean_prediction'])}"),
        _card("clicks", _f(m["rows"]), f"of {_f(m.get('input_rows'))} in the input"),
        _card("positives", _f(m["positives"]), f"rate {_pct(m['positive_rate'])}"),
    ]
    if m.get("bayes_roc_auc") is not None:
        cards.append(_card("Bayes ROC-AUC", _f(m["bayes_roc_auc"]), "true probabilities (synthetic)"))
        gap = m["gap_to_bayes"]
        cards.append(_card("gap to Bayes", f"{gap:+.4f}", "Bayes − model ROC-AUC"
                           + (f"; PR-AUC gap {m['gap_to_bayes_pr_auc']:+.4f}" if m.get("gap_to_bayes_pr_auc") is not None else "")))
    cm = m.get("confusion_matrix")
    if cm:
        cards.append(_card("best F1", _f(cm["f1"], 3), f"at p ≥ {cm['threshold']:.3g}: precision {_f(cm['precision'], 3)}, "
                           f"recall {_f(cm['recall'], 3)}"))

    meta = [
        ("model", m.get("model_dir")), ("data", m.get("input")),
        ("evaluated clicks", f"{_f(m['rows'])} clicks, {_f(m['positives'])} positives"),
        ("evaluated time range (UTC)", _range(m.get("time_range"))),
        ("from", f"{m.get('from_ts') or 'first click'} ({m.get('from_source')})"),
        ("input time range", _range(m.get("input_time_range"))),
        ("model trained on", _range((model.get("time_ranges") or {}).get("train"))),
        ("model holdout from", model.get("valid_from")),
        ("feature spec hash", model.get("feature_spec_hash")), ("model git commit", model.get("git_commit")),
        ("generated", m.get("generated_at")),
    ]
    meta_html = "".join(f"<dt>{_e(k)}</dt><dd>{v if k.endswith('range') or k == 'model trained on' else _e(v)}</dd>"
                        for k, v in meta)
    warn = ""
    if m.get("rows_before_valid_from"):
        warn = (f'<div class="callout warn">{_f(m["rows_before_valid_from"])} of the evaluated clicks are before the '
                "model's holdout start: the model may have trained on them, so these metrics are optimistic.</div>")
    bayes = ""
    if m.get("bayes_roc_auc") is not None:
        bayes = (f'<div class="callout">Synthetic data: the generator\'s true probabilities reach ROC-AUC '
                 f"<b>{_f(m['bayes_roc_auc'])}</b> on the same clicks; the model's ROC-AUC is <b>{abs(m['gap_to_bayes']):.4f}</b> "
                 f"{'below' if m['gap_to_bayes'] >= 0 else 'above'} that ceiling (dashed grey curves below).</div>")
    imp = importance_plot(m)
    cm_html = ""
    if cm:
        (tn, fp), (fn, tp) = cm["matrix"]
        cm_html = ("<h2>Confusion matrix at the best-F1 threshold</h2>"
                   f'<p class="sub">Threshold p ≥ {cm["threshold"]:.4g}.</p>'
                   '<table style="width:auto"><tr><th>actual \\ predicted</th><th>not attributed</th><th>attributed</th></tr>'
                   f"<tr><td>not attributed</td><td>{_f(tn)}</td><td>{_f(fp)}</td></tr>"
                   f"<tr><td>attributed</td><td>{_f(fn)}</td><td>{_f(tp)}</td></tr></table>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>attribution evaluation — ROC-AUC {_f(m['roc_auc'])}</title><style>{CSS}</style></head>
<body><main>
<h1>Attribution model evaluation</h1>
<div class="sub">P(app download | ad click), TalkingData clicks</div>
<dl class="meta">{meta_html}</dl>
{warn}
<div class="cards">{''.join(cards)}</div>
{bayes}
<h2>Ranking</h2>
<div class="grid2">{_img(roc_plot(m), "ROC curve")}{_img(pr_plot(m), "precision-recall curve")}</div>
<h2>Calibration</h2>
<div class="grid2">{_img(calibration_plot(m), "reliability curve")}
<div>{_reliability_table(m['reliability'])}</div></div>
<h2>Feature importance</h2>
{_img(imp, "feature importance") if imp else '<p class="sub">The booster reports no feature gains.</p>'}
<h2>Per day (UTC)</h2>
{_metric_table(m['per_day'], 'date', 'date')}
<h2>Top {len(m['per_app'])} apps by clicks</h2>
{_metric_table(m['per_app'], 'app', 'app')}
{ablation_section(m.get('ablation'))}
{cm_html}
</main></body></html>
"""


def _bin_range(r: dict) -> str:
    if "lower_edge" not in r:
        return str(r["bin"] + 1)
    return f"{r['lower_edge']:.0e} – {r['upper_edge']:.0e}" if r["lower_edge"] > 0 else f"< {r['upper_edge']:.0e}"


def _reliability_table(pts: list[dict]) -> str:
    head = "<tr><th>predicted in</th><th>clicks</th><th>positives</th><th>mean predicted</th><th>observed</th><th>95% interval</th></tr>"
    body = "".join(
        f"<tr><td>{_bin_range(r)}</td><td>{_f(r['count'])}</td><td>{_f(r['positives'])}</td><td>{_pct(r['mean_predicted'])}</td>"
        f"<td>{_pct(r['observed_rate'])}</td><td>{_pct(r.get('observed_low'), 2)} – {_pct(r.get('observed_high'), 2)}</td></tr>"
        for r in pts
    )
    return f'<table style="font-size:12px">{head}{body}</table>'
