"""live_report.html from a live_metrics.json: per model, the overall and rolling-24 h quality, and per hour
ROC-AUC, calibration, volume and the drift (PSI) of each feature. Self-contained, like the holdout report."""

from __future__ import annotations

import time

import matplotlib.pyplot as plt

from attribution.evaluation.report import CSS, MODEL_COLOR, _card, _e, _f, _img, _png, _style

PSI_ALERT = 0.2


def _ratio(c: dict | None) -> str:
    if not c or c["ratio"] is None:
        return "—"
    lo, hi = c["interval"]
    return f"{c['ratio']:.3f} [{_f(lo, 3)}, {_f(hi, 3)}]"


def hourly_plot(rows: list[dict]) -> str | None:
    if not rows:
        return None
    hours = [r["hour"] / 3600 for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    a1.plot(hours, [r["roc_auc"] if r["roc_auc"] is not None else float("nan") for r in rows], "o-", color=MODEL_COLOR)
    a1.set(ylabel="ROC-AUC (labelled)", title="per hour")
    psis = [max(r.get("psi", {}).values(), default=float("nan")) for r in rows]
    a2.bar(hours, [r["clicks"] for r in rows], color="#c9d6ea", label="clicks")
    a2.set(ylabel="clicks", xlabel="hours since epoch")
    ax3 = a2.twinx()
    ax3.plot(hours, psis, "s-", color="#c62828", label="max PSI")
    ax3.axhline(PSI_ALERT, color="#c62828", lw=1, ls=":")
    ax3.set(ylabel="max PSI")
    for ax in (a1, a2):
        _style(ax)
    return _png(fig)


def render_live_report(m: dict) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Live quality</title><style>{CSS}</style></head><body><main>",
             "<h1>Live quality</h1>",
             (f"<div class='sub'>as of {_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(m['as_of'])))}; label "
              f"horizon {m['label_horizon_seconds'] / 3600:g} h: a click without a postback within it is a negative</div>"),
             "<div class='cards'>",
             _card("ROC-AUC", _f(m["roc_auc"]), "all labelled clicks", accent=True), _card("PR-AUC", _f(m["pr_auc"])),
             _card("log loss", _f(m["log_loss"])), _card("clicks", _f(m["clicks"])), _card("labelled", _f(m["labelled"])),
             _card("positives", _f(m["positives"])), _card("duplicate postbacks", _f(m["duplicates"])),
             _card("unknown click_ids", _f(m["unknown_click_ids"])), "</div>",
             ("<h2>Per model</h2><table><tr><th>model</th><th>clicks</th><th>labelled</th><th>positives</th>"
              "<th>ROC-AUC</th><th>PR-AUC</th><th>log loss</th><th>predicted/observed [95%]</th>"
              "<th>rolling 24 h ROC-AUC</th></tr>")]
    for model, s in m["models"].items():
        parts.append(f"<tr><td>{_e(model)}</td><td>{_f(s['clicks'])}</td><td>{_f(s['labelled'])}</td><td>{_f(s['positives'])}</td>"
                     f"<td>{_f(s['roc_auc'])}</td><td>{_f(s['pr_auc'])}</td><td>{_f(s['log_loss'])}</td>"
                     f"<td>{_ratio(s['calibration'])}</td><td>{_f(s['rolling_24h']['roc_auc'])}</td></tr>")
    parts.append("</table>")
    for model in m["models"]:
        rows = [r for r in m["hourly"] if r["model"] == model]
        plot = hourly_plot(rows)
        parts.append(f"<h2>Per hour: {_e(model)}</h2>" + (_img(plot, "per hour") if plot else ""))
        features = sorted({k for r in rows for k in r.get("psi", {})})
        head = "".join(f"<th>PSI {_e(f)}</th>" for f in features)
        parts.append(f"<table><tr><th>hour (UTC)</th><th>complete</th><th>clicks</th><th>labelled</th><th>positives</th>"
                     f"<th>ROC-AUC</th><th>predicted/observed</th>{head}</tr>")
        for r in rows:
            psi = "".join(
                f"<td class='{'bad' if r['psi'][f] > PSI_ALERT else ''}'>{_f(r['psi'][f], 3)}</td>" if f in r.get("psi", {})
                else "<td>—</td>" for f in features)
            parts.append(f"<tr><td>{time.strftime('%Y-%m-%d %H:00', time.gmtime(r['hour']))}</td><td>{_f(r['label_complete'])}</td>"
                         f"<td>{_f(r['clicks'])}</td><td>{_f(r['labelled'])}</td><td>{_f(r['positives'])}</td>"
                         f"<td>{_f(r['roc_auc'])}</td><td>{_ratio(r['calibration'])}</td>{psi}</tr>")
        parts.append("</table>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
