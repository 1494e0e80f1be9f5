"""Whether to retrain now: on evidence (one of the monitor's alerts is firing) or on age (the last run is N
days old). `attribution pipeline schedule --on-evidence` asks this each time it is started (a CronJob) and
submits one run only when the answer is yes.

    decide_retrain(firing_alerts(alertmanager_url), last_run_at, now, max_age_days=7)
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta

# The PrometheusRule's alerts that say the serving model is no longer good enough (manifests/base/monitor/).
RETRAIN_ALERTS = ("AttributionLiveQualityBelowGate", "AttributionCalibrationOff", "AttributionFeatureDrift")


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def firing_alerts(alertmanager_url: str, timeout: float = 30.0) -> list[str]:
    """Names of the active, unsilenced alerts (Alertmanager API v2)."""
    query = urllib.parse.urlencode({"active": "true", "silenced": "false", "inhibited": "false"})
    with urllib.request.urlopen(f"{alertmanager_url.rstrip('/')}/api/v2/alerts?{query}", timeout=timeout) as resp:
        alerts = json.loads(resp.read())
    return sorted({a.get("labels", {}).get("alertname", "") for a in alerts if a.get("status", {}).get("state") == "active"} - {""})


def decide_retrain(
    firing: list[str], last_run_at: datetime | None, now: datetime, max_age_days: float,
    alerts: tuple[str, ...] = RETRAIN_ALERTS,
) -> RetrainDecision:
    evidence = sorted(set(firing) & set(alerts))
    if evidence:
        return RetrainDecision(True, f"alert firing: {', '.join(evidence)}")
    if last_run_at is None:
        return RetrainDecision(True, "no earlier run")
    age = now - last_run_at
    if age >= timedelta(days=max_age_days):
        return RetrainDecision(True, f"the last run is {age.total_seconds() / 86400:.1f} days old (>= {max_age_days:g})")
    return RetrainDecision(False, f"no retraining alert firing and the last run is {age.total_seconds() / 86400:.1f} "
                                  f"days old (< {max_age_days:g})")
