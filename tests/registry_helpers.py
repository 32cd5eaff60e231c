"""Helpers for registry tests: trainings of known quality, and registry snapshots."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from omegaconf import DictConfig

from mlops import training
from mlops.models.inference import inference_model
from mlops.tracking.resume import load_own_checkpoint

# A budget too small to learn digits well, and one that reliably does better.
WEAK = ["model=mlp", "trainer.max_epochs=1", "trainer.limit_train_batches=1"]
STRONG = ["model=mlp", "trainer.max_epochs=3", "trainer.limit_train_batches=12"]


def registry_state(client: mlflow.MlflowClient, name: str) -> tuple[dict, dict, int]:
    """Aliases, tags and version count: what a failed command must leave unchanged."""
    model = client.get_registered_model(name)
    versions = client.search_model_versions(f"name = '{name}'")
    return dict(model.aliases), dict(model.tags), len(versions)


def checkpoint_probabilities(cfg: DictConfig, checkpoint: Path, x: np.ndarray) -> np.ndarray:
    """What the network saved in a training checkpoint answers for `x`, as a registered
    version answers: a version must answer so for the checkpoint it was registered from."""
    datamodule = training.load_data(cfg)
    net = training.build_network(cfg, datamodule)
    module = training.build_classifier(cfg, net, datamodule.num_classes)
    module.load_state_dict(load_own_checkpoint(checkpoint)["state_dict"])
    with torch.no_grad():
        return inference_model(module.net)(torch.from_numpy(x)).numpy()


def registered_probabilities(tracking_uri: str, name: str, version: str, x: np.ndarray):
    client = mlflow.MlflowClient(tracking_uri)
    model = mlflow.pyfunc.load_model(client.get_model_version_download_uri(name, version))
    return np.asarray(model.predict(x))


def check_registered_from_best_checkpoint(
    cfg: DictConfig, tracking_uri: str, name: str, checkpoints: Path, x: np.ndarray
) -> None:
    """Version 1 of `name` answers as `best.ckpt` in `checkpoints`, not as `last.ckpt`
    (which the test's config makes another epoch: else the check would prove nothing)."""
    best = checkpoint_probabilities(cfg, checkpoints / "best.ckpt", x)
    last = checkpoint_probabilities(cfg, checkpoints / "last.ckpt", x)
    assert not np.allclose(best, last, atol=1e-4), "best.ckpt is the last epoch: no check"
    registered = registered_probabilities(tracking_uri, name, "1", x)
    np.testing.assert_allclose(registered, best, rtol=1e-4, atol=1e-6)
