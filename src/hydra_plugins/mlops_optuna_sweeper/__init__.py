"""Hydra's entry to mlops' Optuna search (mlops.search): `hydra/sweeper=mlops_optuna`, as
conf/hparams_search/ selects it. Hydra only loads plugins from the `hydra_plugins`
package, so this shim lives here and the search itself in mlops.search."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class MlopsOptunaSweeperConf:
    """Every key is documented in docs/config.md (`hparams_search`)."""

    _target_: str = "hydra_plugins.mlops_optuna_sweeper.MlopsOptunaSweeper"
    direction: str = "maximize"
    n_trials: int = 20  # the study's total, over all its workers
    storage: Any = None  # a database URL shared by workers; None: in memory, this process
    study_name: Any = None
    sampler: Any = None  # a _target_ node; None: Optuna's default (TPE)
    params: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int = 10  # seconds between a worker's heartbeats (shared studies)
    grace_period: int = 30  # seconds without one before its trial is failed


ConfigStore.instance().store(
    group="hydra/sweeper", name="mlops_optuna", node=MlopsOptunaSweeperConf, provider="mlops"
)


class MlopsOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.launcher = None
        self.config: DictConfig | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from mlops.search.run import search_from_hydra

        assert self.config is not None
        return search_from_hydra(self.settings, self.launcher, self.config, arguments)
