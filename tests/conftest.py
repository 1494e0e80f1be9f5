"""Fixtures: the real Kaggle sample (committed as tests/data/train_sample.csv.gz), a local Spark session,
small synthetic streams."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "train_sample.csv.gz"
SCHEMAS = ROOT / "manifests" / "schemas"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

@pytest.fixture(scope="session")
def sample_path() -> Path:
    if not SAMPLE.exists():
        pytest.fail(f"the real sample is missing at {SAMPLE}: it is committed with the repository")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_clicks(sample_path: Path) -> pd.DataFrame:
    from attribution.io import read_clicks

    return read_clicks(sample_path)


@pytest.fixture(scope="session")
def spark():
    from attribution.platform.spark_session import get_spark

    session = get_spark("attribution-tests", master="local[2]", shuffle_partitions=4)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def tricky_stream(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Few keys, many same-second clicks, exact duplicate rows and rows out of time order."""
    rng = np.random.default_rng(seed)
    t = 1_510_000_000 + np.sort(rng.integers(0, 40_000, n))
    t[rng.random(n) < 0.3] = t[0] + 5  # a burst sharing one second
    df = pd.DataFrame(
        {
            "ip": rng.integers(1, 6, n).astype("uint32"),
            "app": rng.integers(1, 4, n).astype("uint16"),
            "device": rng.integers(1, 3, n).astype("uint16"),
            "os": rng.integers(1, 3, n).astype("uint16"),
            "channel": rng.integers(1, 5, n).astype("uint16"),
            "click_time": t.astype(np.int64),
        }
    )
    df = pd.concat([df, df.iloc[:200]], ignore_index=True)  # exact duplicates
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # out of order
    df.insert(0, "row_id", np.arange(len(df), dtype=np.int64))
    return df


SAMPLE_VALID_FROM = "2017-11-09 00:00:00"


@pytest.fixture(scope="session")
def sample_model(tmp_path_factory, sample_path):
    """The default pipeline trained once on the real sample before 2017-11-09 (the acceptance split)."""
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    model_dir = tmp_path_factory.mktemp("model") / "sample"
    metadata = train(sample_path, model_dir, TrainConfig(valid_from=SAMPLE_VALID_FROM, ablation=False))
    return model_dir, metadata


@pytest.fixture(scope="session")
def serving_model_dir(tmp_path_factory, sample_path):
    """A small, fast model on the real sample, shared by the inference and serving tests."""
    from tests.redis_fixture import trained_model

    return trained_model(tmp_path_factory, sample_path)


@pytest.fixture(scope="session")
def expected_sample_probabilities(tmp_path_factory, serving_model_dir, sample_path):
    """attribution.batch.predict_file over the whole sample, indexed by row_id."""
    from tests.redis_fixture import expected_probabilities

    return expected_probabilities(tmp_path_factory, serving_model_dir, sample_path)
