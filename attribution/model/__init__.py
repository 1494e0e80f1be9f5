"""The model and nothing else: the feature assembly and Cat2Vec (estimators), the loaded model and its
directory format (bundle). Training lives in attribution.training, which imports this, never the reverse."""
