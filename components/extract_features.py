"""Step 1: clicks -> features (a Dataset: a folder of Parquet files).

engine `bigquery`: a query job over the BigQuery table `data` writes a destination table, an extract job
exports it as Parquet straight into this artifact's gs:// location (attribution.bigquery); days_back > 0
keeps that many whole days before window_end. `duckdb`,
`vectorized`, `spark`: the click file at `data` through attribution.features.build (`spark` uses the
session's master: local[N] in the task, or SPARK_MASTER for a Spark cluster).
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from attribution.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def extract_features(
    data: str,
    feature_engine: str,
    features: Output[Dataset],
    cache_token: str = "",
    window_end: str = "",
    days_back: int = 0,
    bq_project: str = "",
    bq_location: str = "US",
    bq_staging_dataset: str = "attribution_staging",
) -> None:
    import logging
    import os
    import zlib

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    features.metadata["engine"] = feature_engine
    features.metadata["source"] = data
    features.metadata["cache_token"] = cache_token
    if feature_engine == "bigquery":
        from google.cloud import bigquery

        from attribution import bigquery as bq

        if not features.uri.startswith("gs://"):
            raise ValueError(f"the bigquery engine exports to GCS; this run's pipeline root gives {features.uri}")
        span = bq.time_range(window_end or bq.window_end(), days_back)
        project = bq_project or data.split(".")[0]
        stamp = (window_end or bq.window_end()).replace("-", "")
        destination = f"{project}.{bq_staging_dataset}.features_{stamp}_{zlib.crc32(features.uri.encode()):08x}"
        jobs = bq.build_feature_jobs(
            data, destination, features.uri.rstrip("/") + "/part-*.parquet",
            start=span[0] if span else None, end=span[1] if span else None, location=bq_location,
        )
        summary = bq.run_feature_jobs(bigquery.Client(project=project, location=bq_location), jobs)
        features.metadata.update(summary)
        features.metadata["time_range"] = [str(s) for s in span] if span else None
        return
    from attribution.features.build import build_features_file

    os.makedirs(features.path, exist_ok=True)
    summary = build_features_file(data, os.path.join(features.path, "features.parquet"), engine=feature_engine,
                                  progress=False)
    logging.getLogger("extract_features").info("%s", summary)
    features.metadata["rows"] = summary.rows
    features.metadata["seconds"] = round(summary.seconds, 2)
