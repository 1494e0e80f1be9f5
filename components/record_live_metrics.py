"""Step 7: the serving model's live quality recorded beside the candidate's holdout metrics
(attribution.steps.record_live_metrics); a Metrics artifact, so the KFP UI shows both side by side."""

from kfp import dsl
from kfp.dsl import Input, Metrics, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def record_live_metrics(metrics: Input[Metrics], live: Output[Metrics], live_metrics_uri: str = "") -> None:
    from attribution import steps

    steps.configure_logging()
    result = steps.record_live_metrics(metrics.path, live_metrics_uri, live.path)
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            live.log_metric(key, value)
    live.metadata["live_available"] = result["live_available"]
    live.metadata["live_source"] = result["live_source"]
