"""The predictor's online state: the incremental kernel, the in-process store and the Redis store."""
