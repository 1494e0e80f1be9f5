"""Step 2: Cat2Vec vectors on the training window only, a Model artifact (attribution.steps.fit_cat2vec)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def fit_cat2vec(
    features: Input[Dataset], cat2vec: Output[Model], memory_budget: str, valid_from: str = "", seed: int = 0
) -> None:
    from attribution import steps

    steps.configure_logging()
    cat2vec.metadata.update(steps.fit_cat2vec(features.path, cat2vec.path, valid_from, seed, memory_budget))
    cat2vec.metadata["read_from"] = {"features": features.uri}  # lineage, checked by tests
