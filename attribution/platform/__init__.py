"""Where the library meets the cluster: image names, Spark sessions and submission, the deploy gate."""
