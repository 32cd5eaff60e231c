"""A hyperparameter search as a Hydra sweep driven by Optuna (4 or later) directly: each
worker asks the study for a trial, launches it as a Hydra job through the configured
launcher (in this process, or a SLURM job with hydra-submitit-launcher), reports the job's
`optimized_metric`, and goes on until the study holds `n_trials` trials.

Any number of workers may run the same command against one study storage: trials run one
after another in each, none twice, and the count is the study's, not each worker's. A
failing trial (a diverging learning rate) is recorded FAIL and the search goes on; a stop
(SIGTERM, Ctrl-C) stops the worker, and rerunning the command continues the study.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlops.errors import ConfigError
from mlops.messages import tell
from mlops.search.space import split_arguments, trial_overrides
from mlops.search.study import best, open_study, trials_counted

RESULTS_FILE = "optimization_results.yaml"  # read by mlops.tracking.sweep


class TrialFailed(Exception):
    """The trial's job raised: the trial is FAIL, the search goes on."""


@dataclass
class SearchSettings:
    direction: str
    n_trials: int
    storage: str | None
    study_name: str | None
    sampler: Any  # an optuna sampler, or None for Optuna's default
    params: Mapping[str, Any]
    heartbeat_interval: int
    grace_period: int


def check_settings(settings: SearchSettings) -> None:
    if settings.direction not in ("maximize", "minimize"):
        raise ConfigError(
            f"hydra.sweeper.direction={settings.direction!r}: write maximize or minimize"
        )
    if settings.n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={settings.n_trials}: at least 1")
    if settings.storage and not settings.study_name:
        raise ConfigError(
            "hydra.sweeper.storage is set but hydra.sweeper.study_name is not: workers find "
            "each other by the study's name, so name it (hydra.sweeper.study_name=digits-lr)"
        )


def job_value(job_return) -> float:
    """The job's return value; a job that raised is a failed trial, a stop stops."""
    try:
        value = job_return.return_value
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:
        raise TrialFailed(f"{type(error).__name__}: {error}") from error
    if value is None:
        raise ConfigError(
            "the trial's job returned no value: set optimized_metric to a metric the "
            "training logs (val/acc_best)"
        )
    return float(value)


def run_search(
    settings: SearchSettings, launcher, config: DictConfig, arguments: Sequence[str],
    on_stale_trial=None,
) -> dict[str, Any]:  # fmt: skip
    """Run trials until the study is full; returns what RESULTS_FILE records."""
    check_settings(settings)
    space, fixed = split_arguments(settings.params, list(arguments))
    if not space:
        raise ConfigError(
            "nothing to search: hydra.sweeper.params (or the command line) names no sweep "
            "such as optimizer.lr=tag(log,interval(1e-4,1e-2))"
        )
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    study = open_study(
        settings.study_name, settings.storage, settings.direction, settings.sampler,
        settings.heartbeat_interval, settings.grace_period, on_stale_trial,
    )  # fmt: skip
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial) -> float:
        overrides = [*fixed, *trial_overrides(space, trial)]
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("sweep_dir", str(sweep_dir.resolve()))
        (job_return,) = launcher.launch([overrides], initial_job_idx=trial.number)
        return job_value(job_return)

    ran = 0
    while trials_counted(study) < settings.n_trials:
        study.optimize(objective, n_trials=1, catch=(TrialFailed,))
        ran += 1
    counted = trials_counted(study)
    tell(f"search {study.study_name}: this worker ran {ran} trial(s); the study holds "
         f"{counted} of {settings.n_trials}")  # fmt: skip
    results: dict[str, Any] = {"name": study.study_name, "trials_run_here": ran}
    if found := best(study):
        results["best_params"], results["best_value"] = found
        params = " ".join(f"{k}={v}" for k, v in found[0].items())
        tell(f"best {config.get('optimized_metric')}={found[1]:.4f}: {params}")
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
    return results
