"""Step 3: Hyperopt TPE on the inner time split, params.json as an Artifact (attribution.steps.tune_params);
SparkTrials on a local Spark inside the step when the trainer is Spark."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def tune_params(
    features: Input[Dataset], cat2vec: Input[Model], params: Output[Artifact], memory_budget: str, valid_from: str = "",
    max_evals: int = 0, seed: int = 0, trainer: str = "xgboost",
) -> None:
    from attribution import steps

    steps.configure_logging()
    params.metadata.update(steps.tune_params(features.path, cat2vec.path, params.path, valid_from, max_evals, seed,
                                                 memory_budget=memory_budget, trainer=trainer))
    params.metadata["read_from"] = {"features": features.uri, "cat2vec": cat2vec.uri}
