"""Serving: a registered MLflow version as a BentoML service."""
