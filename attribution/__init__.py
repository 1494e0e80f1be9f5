"""attribution: predict, at click time, the probability that a mobile-ad click leads to an app download."""

import os

__version__ = "0.1.0"

# XGBoost's OpenMP threads spin while they wait for each other by default. Where threads outnumber free
# cores (a shared node, a pod under a CPU limit, parallel tests) that spinning starves the work: a 200-round
# fit on 15k rows took 7-28 s instead of 1.5 s on a busy 2-core machine. Passive waiting changes no result.
# Set here, before anything loads libgomp, so every entry point (CLI, KFP components, servers) and the
# processes they start inherit it; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
