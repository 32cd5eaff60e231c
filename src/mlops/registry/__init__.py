"""MLflow model registry: log the trained model and register it as a new version."""
