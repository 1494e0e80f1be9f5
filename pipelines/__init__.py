"""The training pipeline's adapters: its KFP definition, the local and emulated runs, the cluster commands."""

PIPELINE_NAME = "attribution-train"  # here, not in attribution_pipeline: naming it needs no kfp import
