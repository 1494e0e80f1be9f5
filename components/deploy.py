"""Step 6: the deploy gate (attribution.deploy). Deploys only when the holdout ROC-AUC and PR-AUC reach the
thresholds and are not worse than the deployed model's; runtime `kubernetes` applies the InferenceService
through the API, `local` writes the manifest it would apply. The decision record is an artifact."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from attribution.images import PIPELINE_IMAGE


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
    import json
    import logging
    from pathlib import Path

    from attribution.deploy import deploy_gate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    candidate = json.loads(Path(metrics.path).read_text())
    record = deploy_gate(
        candidate, model.uri, deployed_model_uri=deployed_model_uri, min_roc_auc=min_roc_auc,
        min_pr_auc=min_pr_auc, target="kubernetes" if runtime == "kubernetes" else "manifest",
        namespace=namespace, output_dir=decision.path,
    )
    print(json.dumps(record.to_dict(), indent=2))
    decision.metadata["deployed"] = record.deployed
    decision.metadata["reasons"] = record.reasons
    decision.metadata["read_from"] = {"model": model.uri, "metrics": metrics.uri}
    return record.deployed
