"""Step 5: evaluation on the holdout: metrics.json (Metrics, scalars logged), the ROC curve and confusion
matrix (ClassificationMetrics, drawn by the KFP UI) and the HTML report (attribution.steps.evaluate_model)."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate_model(
    features: Input[Dataset],
    model: Input[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[HTML],
    memory_budget: str,
    from_ts: str = "",
) -> None:
    from attribution import steps

    steps.configure_logging()
    result = steps.evaluate_model(model.path, features.path, metrics.path, report.path, from_ts, memory_budget)
    for key, value in result.scalars.items():
        metrics.log_metric(key, value)
    classification.log_roc_curve(*result.roc)
    classification.log_confusion_matrix(*result.confusion)
    report.metadata["read_from"] = {"features": features.uri, "model": model.uri}
