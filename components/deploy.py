"""Step 6: the deploy gate; the decision record is an Artifact (attribution.steps.deploy_model)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def deploy_model(
    model: Input[Model],
    metrics: Input[Metrics],
    decision: Output[Artifact],
    min_roc_auc: float,
    min_pr_auc: float,
    deployed_model_uri: str = "",
    runtime: str = "kubernetes",
    namespace: str = "attribution",
) -> bool:
    from attribution import steps

    steps.configure_logging()
    result = steps.deploy_model(model.uri, metrics.path, decision.path, min_roc_auc, min_pr_auc,
                                deployed_model_uri, runtime, namespace)
    decision.metadata.update(result)
    decision.metadata["read_from"] = {"model": model.uri, "metrics": metrics.uri}
    return result["deployed"]
