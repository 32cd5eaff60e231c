"""MLflow tracking: lineage tags, run artifacts (config, plots), the logged model."""
