"""Step 4: the model directory (Model artifact) with the tuned parameters: XGBoost in the task, or
xgboost.spark on Kubernetes or with a local master (attribution.steps.train_model)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_model(
    features: Input[Dataset],
    cat2vec: Input[Model],
    params: Input[Artifact],
    model: Output[Model],
    memory_budget: str,
    trainer: str = "xgboost",
    runtime: str = "kubernetes",
    valid_from: str = "",
    seed: int = 0,
    spark_executors: int = 2,
    spark_executor_memory: str = "8g",
    namespace: str = "attribution",
) -> None:
    from attribution import steps

    steps.configure_logging()
    model.metadata.update(steps.train_model(
        features.path, features.uri, cat2vec.path, params.path, model.path, model.uri, trainer, runtime, valid_from,
        seed, spark_executors, spark_executor_memory, namespace, memory_budget=memory_budget, cat2vec_uri=cat2vec.uri,
    ))
    model.metadata["read_from"] = {"features": features.uri, "cat2vec": cat2vec.uri, "params": params.uri}
