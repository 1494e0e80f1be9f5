"""Holdout metrics, the evaluation a deploy gate reads, and its HTML report."""
