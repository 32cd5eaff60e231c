"""Compose the Hydra config outside `@hydra.main`: for tests, benchmarks and notebooks."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig


def compose_config(
    config_dir: Path, overrides: list[str], config_name: str = "train"
) -> DictConfig:
    """The config `make train ARGS="..."` would get; unknown keys or options raise."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
