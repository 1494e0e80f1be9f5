"""attribution: predict, at click time, the probability that a mobile-ad click leads to an app download."""

__version__ = "0.1.0"
