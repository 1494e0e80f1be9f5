"""Training: configuration and time split, the local, streaming and Spark trainers, Hyperopt tuning and
the ablation; every trainer records its model the same way (record)."""
