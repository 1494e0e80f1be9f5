"""Step 1: clicks -> features, a Dataset (a folder of Parquet files): attribution.steps.extract_features."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from attribution.platform.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def extract_features(
    data: str,
    feature_engine: str,
    features: Output[Dataset],
    memory_budget: str,
    cache_token: str = "",
    window_end: str = "",
    days_back: int = 0,
    bq_project: str = "",
    bq_location: str = "US",
    bq_staging_dataset: str = "attribution_staging",
) -> None:
    from attribution import steps

    steps.configure_logging()
    features.metadata.update(steps.extract_features(
        data, feature_engine, features.path, features.uri, window_end, days_back, bq_project, bq_location,
        bq_staging_dataset, memory_budget=memory_budget,
    ))
    features.metadata["cache_token"] = cache_token
