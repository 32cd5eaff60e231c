"""mlops: train with Lightning + Hydra, track and register with MLflow, version data with DVC."""

__version__ = "0.1.0"
