"""Compose the Hydra config outside `@hydra.main`: for tests, benchmarks and notebooks."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf


def register_resolvers() -> None:
    """`${file_stem:${data.path}}`: a dataset named after its file (`data/churn.csv` ->
    `churn`) when `data.name` is not given. Idempotent; call before composing."""
    if not OmegaConf.has_resolver("file_stem"):
        OmegaConf.register_new_resolver("file_stem", lambda path: Path(str(path)).stem)


def compose_config(
    config_dir: Path, overrides: list[str], config_name: str = "train"
) -> DictConfig:
    """The config `make train ARGS="..."` would get; unknown keys or options raise."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)
