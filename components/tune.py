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

    from sklearn.pipeline import FeatureUnion

    from attribution.cat2vec import Cat2Vec
    from attribution.features.spec import DEFAULT_SPEC
    from attribution.model import (
        DEFAULT_PARAMS,
        FeatureAssembler,
        TimeSplit,
        TrainConfig,
        choose_negative_rate,
        load_training_frame,
        to_epoch,
    )
    from attribution.schema import LABEL

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    doc = {"params": dict(DEFAULT_PARAMS), "trials": [], "max_evals": max_evals}
    if max_evals > 0:
        from attribution.tune import tune

        cfg = TrainConfig(valid_from=valid_from or None, max_evals=max_evals, seed=seed)
        frame = load_training_frame(features.path)
        split = TimeSplit.of(frame["click_time"].to_numpy(), to_epoch(cfg.valid_from), cfg.tune_fraction)
        negative_rate = choose_negative_rate(int((frame[LABEL].to_numpy()[split.train] == 0).sum()))
        union = FeatureUnion([("assemble", FeatureAssembler(DEFAULT_SPEC.to_json(), True)),
                              ("cat2vec", Cat2Vec.load(cat2vec.path))])
        best, trials = tune(frame, split, cfg, negative_rate, union=union)
        doc.update(params=best, trials=trials, negative_rate=negative_rate)
    with open(params.path, "w") as fh:
        json.dump(doc, fh, indent=2, default=str)
    params.metadata["max_evals"] = max_evals
    params.metadata["read_from"] = {"features": features.uri, "cat2vec": cat2vec.uri}
    params.metadata.update({k: v for k, v in doc["params"].items() if isinstance(v, (int, float))})
