"""manifests/base/monitor/ against the code it runs: the Deployment's command parses, the ports agree, and
every metric the PrometheusRule and the Grafana dashboard read is one the monitor or the predictor exports."""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifest_checks as mc

from attribution.monitoring.evidence import RETRAIN_ALERTS
from attribution.monitoring.prediction_log import PredictionLog, register_log_metrics
from attribution.monitoring.service import Monitor, MonitorCollector

MONITOR = mc.MANIFESTS / "base" / "monitor"
NOW = int(time.time())
METRIC = re.compile(r"\battribution_[a-z0-9_]+")


@pytest.fixture(scope="module")
def docs():
    return mc.render(mc.MANIFESTS / "base")


def one(docs, kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, (kind, name)
    return hits[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """Every sample name the monitor and the predictor's log expose, with data flowing."""
    d = tmp_path_factory.mktemp("exported")
    log = PredictionLog(str(d / "log"), "spec:model")

    class B:
        def __init__(self) -> None:
            self.ids = np.ones((2, 5), np.int64)
            self.t = np.array([NOW - 36 * 3600, NOW - 36 * 3600 + 100])  # label-complete, inside the rolling 24 h
            self.click_ids = ["1", "2"]

        def __len__(self) -> int:
            return 2

    log.on_scored(B(), np.array([0.8, 0.1]))
    log.close()
    reference = {"model_id": "spec:model", "histograms": {"app": {"kind": "categorical", "values": [1], "fractions": [1.0, 0.0]}}}
    monitor = Monitor(str(d / "log"), references={"spec:model": reference})
    monitor.add_postbacks(["1"], [NOW - 36 * 3600 + 60])
    registry = CollectorRegistry()
    registry.register(MonitorCollector(monitor, 0.9))
    register_log_metrics(log, registry)
    text = generate_latest(registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_alerts_and_dashboard_read_only_exported_metrics(docs, exported):
    rule = one(docs, "PrometheusRule", "attribution-monitor")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    alerts = {r["alert"] for r in rules}
    assert set(RETRAIN_ALERTS) <= alerts and "AttributionPostbacksStopped" in alerts
    used = {m for r in rules for m in METRIC.findall(str(r["expr"]))}
    dashboard = json.loads(one(docs, "ConfigMap", "attribution-monitor-dashboard")["data"]["attribution-live.json"])
    used |= {m for p in dashboard["panels"] for t in p["targets"] for m in METRIC.findall(t["expr"])}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    exprs = {r["alert"]: str(r["expr"]) for r in rules}
    assert "> 0.2" in exprs["AttributionFeatureDrift"] and "> 2" in exprs["AttributionCalibrationOff"]
    assert "attribution_live_min_roc_auc" in exprs["AttributionLiveQualityBelowGate"]
    assert json.loads((MONITOR / "grafana-dashboard.json").read_text()) == dashboard


def test_deployment_runs_the_monitor_command_as_configured(docs):
    from attribution.cli import build_parser

    dep = one(docs, "Deployment", "attribution-monitor")
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "attribution-monitor" and dep["spec"]["strategy"]["type"] == "Recreate"
    sa = one(docs, "ServiceAccount", "attribution-monitor")
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].startswith("attribution-monitor@")
    c = pod["containers"][0]
    assert c["command"][:3] == ["python", "-m", "attribution.cli"]
    config = one(docs, "ConfigMap", "attribution-monitor-config")["data"]
    args = [re.sub(r"\$\((\w+)\)", lambda m: config[m.group(1)], a) for a in c["args"]]
    parsed = build_parser().parse_args(c["command"][3:] + args)
    assert parsed.serve and parsed.predictions == config["PREDICTION_LOG"] and parsed.reference == [config["REFERENCE"]]
    port = c["ports"][0]["containerPort"]
    assert parsed.port == port == int(pod.get("annotations", dep["spec"]["template"]["metadata"]["annotations"])["prometheus.io/port"])
    svc = one(docs, "Service", "attribution-monitor")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    ingress = one(docs, "NetworkPolicy", "attribution-monitor-ingress")["spec"]
    assert ingress["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert ingress["ingress"][0]["ports"] == [{"protocol": "TCP", "port": port}]
    assert shlex.join(c["command"]).endswith("monitor --serve")


def test_prometheusrule_schema_check_can_fail(docs):
    rule = copy.deepcopy(one(docs, "PrometheusRule", "attribution-monitor"))
    assert mc.crd_problems([rule]) == []
    rule["spec"]["groups"][0]["rules"][0]["severity"] = "high"  # belongs under labels
    rule["spec"]["groups"][0]["rules"][1]["for"] = "two hours"
    problems = mc.crd_problems([rule])
    assert any("severity" in p for p in problems) and any("two hours" in p for p in problems)
