"""Step 6: the deploy gate (candidate and deployed model scored on the same holdout rows, canary rollout);
the decision record is an Artifact (attribution.steps.deploy_model)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    features: Input[Dataset],
    metrics: Input[Metrics],
    decision: Output[Artifact],
    min_roc_auc: float,
    min_pr_auc: float,
    memory_budget: str,
    deployed_model_uri: str = "",
    runtime: str = "kubernetes",
    namespace: str = "attribution",
    canary_traffic_percent: int = 10,
) -> bool:
    from attribution import steps

    steps.configure_logging()
    result = steps.deploy_model(model.uri, features.path, metrics.path, decision.path, min_roc_auc, min_pr_auc,
                                deployed_model_uri, runtime, namespace, canary_traffic_percent,
                                memory_budget=memory_budget)
    decision.metadata.update(result)
    decision.metadata["read_from"] = {"model": model.uri, "features": features.uri, "metrics": metrics.uri}
    return result["deployed"]
