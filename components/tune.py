"""Step 3: Hyperopt TPE on the time split (fit part -> tuning part; never the holdout), with the Cat2Vec
vectors of step 2. Writes params.json ({"params": ..., "trials": [...]}); max_evals 0 = the defaults."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def tune_params(
    features: Input[Dataset], cat2vec: Input[Model], params: Output[Artifact], valid_from: str = "",
    max_evals: int = 0, seed: int = 0,
) -> None:
    import json
    import logging

    from attribution.tune import tune_file

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = tune_file(features.path, valid_from or None, max_evals, seed, cat2vec_dir=cat2vec.path)
    with open(params.path, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
    params.metadata["max_evals"] = max_evals
    params.metadata["read_from"] = {"features": features.uri, "cat2vec": cat2vec.uri}
    params.metadata.update({k: v for k, v in doc["params"].items() if isinstance(v, (int, float))})
