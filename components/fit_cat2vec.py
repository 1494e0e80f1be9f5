"""Step 2: Cat2Vec vectors fitted on the training window only (clicks before valid_from), as a Model
artifact (cat2vec_vectors.npy + cat2vec_vocab.json, no pickle) that tuning and training consume."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def fit_cat2vec(features: Input[Dataset], cat2vec: Output[Model], valid_from: str = "", seed: int = 0) -> None:
    import logging

    from attribution.model import fit_cat2vec as fit

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = fit(features.path, cat2vec.path, valid_from or None, seed)
    cat2vec.metadata["vocabulary"] = summary["vocabulary"]
    cat2vec.metadata["training_rows"] = summary["training_rows"]
    cat2vec.metadata["framework"] = "gensim-word2vec"
    cat2vec.metadata["read_from"] = {"features": features.uri}  # lineage, checked by tests
