"""Step 2: Cat2Vec vectors fitted on the training window only (clicks before valid_from), as a Model
artifact (cat2vec_vectors.npy + cat2vec_vocab.json, no pickle) that tuning and training consume."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def fit_cat2vec(features: Input[Dataset], cat2vec: Output[Model], valid_from: str = "", seed: int = 0) -> None:
    import logging

    from attribution.cat2vec import Cat2Vec
    from attribution.model import TimeSplit, TrainConfig, load_training_frame, to_epoch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    frame = load_training_frame(features.path)
    split = TimeSplit.of(frame["click_time"].to_numpy(), to_epoch(valid_from or None), TrainConfig().tune_fraction)
    model = Cat2Vec(seed=seed, **TrainConfig().cat2vec).fit(frame[split.train])
    model.save(cat2vec.path)
    cat2vec.metadata["vocabulary"] = len(model.vocabulary_)
    cat2vec.metadata["training_rows"] = int(split.train.sum())
    cat2vec.metadata["framework"] = "gensim-word2vec"
    cat2vec.metadata["read_from"] = {"features": features.uri}  # lineage, checked by tests
