"""Shared fixtures: composed configs that train in seconds against a temporary sqlite store."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from mlops.config import compose_config as compose_train_config
from mlops.data.builtin import write_digits

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "conf"

FAST = [
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.enable_progress_bar=false",
    "~callbacks.rich_progress_bar",
]


@pytest.fixture(scope="session")
def digits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def compose_config(overrides: list[str]) -> DictConfig:
    return compose_train_config(CONFIG_DIR, overrides)


@pytest.fixture
def make_cfg(tmp_path: Path, digits_file: Path, tracking_uri: str) -> Callable[..., DictConfig]:
    """A training config on the digits test copy, with every output under tmp_path (one
    output folder per call, as Hydra gives one per run)."""
    calls = itertools.count()

    def make(*overrides: str) -> DictConfig:
        return compose_config(
            [
                f"data.path={digits_file}",
                f"paths.root_dir={ROOT}",
                f"paths.output_dir={tmp_path / f'output-{next(calls)}'}",
                f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}",
                f"logger.tracking_uri={tracking_uri}",
                *FAST,
                *overrides,
            ]
        )

    return make
