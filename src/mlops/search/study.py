"""The Optuna study a search runs in: in memory for one process, or in a database that
several sweep workers, on one machine or many, share (PostgreSQL for a team; several
workers need a server database, not sqlite).

A shared study's workers send heartbeats; a trial whose worker stopped beating (killed,
machine lost) is marked FAIL by the next worker that looks, so it is never left RUNNING,
and its MLflow run is marked FAILED with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

# trials that use up the budget: done, or being run by a live worker
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def open_study(
    name: str | None,
    storage_url: str | None,
    direction: str,
    sampler: optuna.samplers.BaseSampler | None,
    heartbeat_interval_s: int = 10,
    grace_period_s: int = 30,
    on_stale_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Create the study, or join it when it exists (a second worker, or a rerun)."""
    storage: Any = None
    if storage_url:
        storage = optuna.storages.RDBStorage(
            storage_url,
            heartbeat_interval=heartbeat_interval_s,
            grace_period=grace_period_s,
            failed_trial_callback=on_stale_trial,
            engine_kwargs={"pool_pre_ping": True},
        )
    try:
        return optuna.create_study(
            study_name=name, storage=storage, sampler=sampler, direction=direction,
            load_if_exists=True,
        )  # fmt: skip
    except ValueError as error:  # joined with another direction than it was created with
        from mlops.errors import ConfigError

        raise ConfigError(f"study {name!r}: {error}") from None


def trials_counted(study: optuna.Study) -> int:
    """Trials that count towards the budget; a stale one is failed first, so a killed
    worker's trial is run again by someone else rather than counted."""
    with warnings.catch_warnings():  # "experimental since v2.9": stable in practice
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return len(study.get_trials(deepcopy=False, states=BUDGET_STATES))


def best(study: optuna.Study) -> tuple[dict[str, Any], float] | None:
    """The best complete trial's parameters and value, or None before any completes."""
    try:
        trial = study.best_trial
    except ValueError:
        return None
    return trial.params, float(trial.value)
