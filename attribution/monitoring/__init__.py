"""Closing the label loop: the prediction log, attribution postbacks, live quality, drift and the evidence for retraining."""
