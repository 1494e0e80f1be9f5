"""The batch engines of the feature spec: SQL text (sql), DuckDB, Spark SQL and the vectorized kernel."""
