"""Step 4: the final model directory (Model artifact) with the tuned parameters.

trainer `xgboost`: attribution.model.train in the task. trainer `spark`: on a cluster (runtime
`kubernetes`) the SparkApplication rendered from manifests/base/spark-training is submitted, awaited, and
its driver log printed (attribution.spark_submit); locally the same entry point, attribution/spark_job.py,
runs with a local master.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train_model(
    features: Input[Dataset],
    cat2vec: Input[Model],
    params: Input[Artifact],
    model: Output[Model],
    trainer: str = "xgboost",
    runtime: str = "kubernetes",
    valid_from: str = "",
    seed: int = 0,
    spark_executors: int = 2,
    spark_executor_memory: str = "8g",
    namespace: str = "attribution",
) -> None:
    import json
    import logging
    import math
    import os
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tuned = json.loads(Path(params.path).read_text())
    if trainer == "spark":
        from attribution import spark_submit

        tuned_args = ["--params", json.dumps(tuned["params"])]  # the tuning step's choice reaches Spark too
        if runtime == "kubernetes":
            doc = spark_submit.render_spark_application(
                features.uri, model.uri, valid_from or None, executor_instances=spark_executors,
                executor_memory=spark_executor_memory, namespace=namespace, extra_arguments=tuned_args,
            )
            result = spark_submit.submit_and_wait(doc)
            model.metadata["spark_application"] = result.name
            model.metadata["spark_state"] = result.state
        else:
            spark_submit.run_local(features.path, model.path, valid_from or None, extra_arguments=tuned_args)
    elif trainer == "xgboost":
        from attribution.model import TrainConfig, train

        cfg = TrainConfig(trainer="xgboost", valid_from=valid_from or None, seed=seed, params=tuned["params"],
                          ablation=False, cat2vec_dir=cat2vec.path)
        train(features.path, model.path, cfg)
    else:
        raise ValueError(f"trainer must be 'xgboost' or 'spark', got {trainer!r}")
    # Spark on Kubernetes writes the model straight to model.uri (gs://); otherwise it is at model.path.
    local_dir = os.path.isfile(os.path.join(model.path, "metadata.json"))
    if local_dir:
        metadata = json.loads(Path(model.path, "metadata.json").read_text())
    else:
        from attribution.deploy import read_text

        metadata = json.loads(read_text(model.uri.rstrip("/") + "/metadata.json"))
    model.metadata["framework"] = "xgboost"
    model.metadata["read_from"] = {"features": features.uri, "cat2vec": cat2vec.uri, "params": params.uri}
    model.metadata["trainer"] = trainer
    model.metadata["feature_spec_hash"] = metadata.get("feature_spec_hash")
    model.metadata["valid_from"] = metadata.get("valid_from")
    for key, value in (metadata.get("holdout_metrics") or {}).items():
        if isinstance(value, (int, float)) and not math.isnan(value):
            model.metadata[f"holdout_{key}"] = value
