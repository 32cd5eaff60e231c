"""Helpers for registry tests: trainings of known quality, and registry snapshots."""

from __future__ import annotations

import mlflow

# A budget too small to learn digits well, and one that reliably does better.
WEAK = ["model=mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=1"]
STRONG = ["model=mlp", "trainer.max_epochs=3", "trainer.limit_train_batches=12"]


def registry_state(client: mlflow.MlflowClient, name: str) -> tuple[dict, dict, int]:
    """Aliases, tags and version count: what a failed command must leave unchanged."""
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return dict(model.aliases), dict(model.tags), len(versions)
