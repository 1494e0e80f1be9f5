"""Window features: one definition (spec), computed by several engines that agree exactly (engines/,
online/), driven for files by build and out_of_core, and as BigQuery SQL by bigquery."""
