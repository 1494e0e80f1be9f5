"""Step 5: evaluation on the holdout (clicks from the model's valid_from on): metrics.json as a Metrics
artifact (headline numbers also logged as scalars), the ROC curve and confusion matrix as
ClassificationMetrics (the KFP UI draws them), and the report as an HTML artifact."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_model(
    features: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
    from_ts: str = "",
) -> None:
    import logging
    import math
    import os
    import shutil
    import tempfile

    from attribution.evaluate import METRICS_FILE, REPORT_FILE, evaluate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as out:
        result = evaluate(model.path, features.path, out, from_ts=from_ts or None)
        os.makedirs(os.path.dirname(metrics.path) or ".", exist_ok=True)
        shutil.copyfile(os.path.join(out, METRICS_FILE), metrics.path)
        shutil.copyfile(os.path.join(out, REPORT_FILE), report.path)
    report.metadata["read_from"] = {"features": features.uri, "model": model.uri}
    for key in ("roc_auc", "pr_auc", "log_loss", "ece", "rows", "positives", "bayes_roc_auc"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
            metrics.log_metric(key, float(value))
    roc = result["roc_curve"]
    thresholds = [min(1.0, float(t)) for t in roc["thresholds"]]
    classification.log_roc_curve([float(x) for x in roc["fpr"]], [float(x) for x in roc["tpr"]], thresholds)
    cm = result["confusion_matrix"]
    classification.log_confusion_matrix(list(cm["categories"]), [[int(v) for v in row] for row in cm["matrix"]])
