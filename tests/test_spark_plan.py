"""Spark sizing follows the data: shuffle partitions, xgboost.spark workers, executors."""

from attribution.platform.spark_session import executor_plan, shuffle_partitions_for, xgb_workers_for


def test_partitions_and_workers_grow_with_rows_and_respect_the_cluster():
    assert shuffle_partitions_for(1_000) == 8
    assert shuffle_partitions_for(184_903_890) == 740
    assert xgb_workers_for(50_000, available=16) == 1
    assert xgb_workers_for(3_500_000, available=16) == 4
    assert xgb_workers_for(500_000_000, available=16) == 16


def test_executor_plan_for_the_full_file():
    plan = executor_plan(184_903_890)
    assert plan["shuffle_partitions"] == 740
    assert plan["executors"] * plan["executor_cores"] >= plan["shuffle_partitions"] / 4
    assert plan["executor_memory_gib"] == 16
