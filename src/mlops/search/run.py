"""The search as Hydra runs it (hydra_plugins.mlops_optuna_sweeper): settings from
`hydra.sweeper`, and the MLflow side of a shared study: a trial failed for a lost worker
gets its run marked FAILED, and the study's parent run its table when a worker ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlops.search.sweeper import SearchSettings, run_search
from mlops.tracking.sweep import STUDY_TAG, TRIAL_TAG


def settings_from(sweeper: Mapping[str, Any]) -> SearchSettings:
    from hydra.utils import instantiate

    sampler = sweeper.get("sampler")
    params = sweeper.get("params") or {}
    return SearchSettings(
        direction=str(sweeper.get("direction", "maximize")),
        n_trials=int(sweeper.get("n_trials", 20)),
        storage=sweeper.get("storage") or None,
        study_name=sweeper.get("study_name") or None,
        # Hydra instantiates the sweeper's nodes with it: the sampler may be built already
        sampler=instantiate(sampler) if isinstance(sampler, Mapping | DictConfig) else sampler,
        params=OmegaConf.to_container(params) if isinstance(params, DictConfig) else params,
        heartbeat_interval=int(sweeper.get("heartbeat_interval", 10)),
        grace_period=int(sweeper.get("grace_period", 30)),
    )


def _study_runs(client, study: str, filter_extra: str = "") -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    return client.search_runs(
        experiments, filter_string=f"tags.`{STUDY_TAG}` = '{study}'{filter_extra}"
    )


def fail_lost_trial_run(tracking_uri: str):
    """Optuna's failed_trial_callback: the MLflow run of a trial whose worker was lost is
    FAILED, not left RUNNING."""

    def on_stale_trial(study, trial) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        trial_filter = f" and tags.`{TRIAL_TAG}` = '{trial.number}'"
        for run in _study_runs(client, study.study_name, trial_filter):
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, "FAILED")

    return on_stale_trial


def close_study_run(tracking_uri: str, study_name: str, results: Mapping[str, Any]) -> None:
    """The study's parent run gets the table of all its trials so far and the best; it is
    FINISHED once no trial runs (the last worker to end closes it)."""
    from mlflow import MlflowClient

    from mlops.tracking.sweep import RUN_TYPE_TAG, record_jobs

    client = MlflowClient(tracking_uri)
    for parent in _study_runs(client, study_name):
        if parent.data.tags.get(RUN_TYPE_TAG) != "sweep":
            continue
        rows = record_jobs(client, parent, dict(results))
        if not any(row["status"] == "RUNNING" for row in rows):
            client.set_terminated(parent.info.run_id, "FINISHED")


def search_from_hydra(
    sweeper: Mapping[str, Any], launcher, config: DictConfig, arguments: Sequence[str]
) -> dict[str, Any]:
    settings = settings_from(sweeper)
    tracking_uri = config.logger.tracking_uri
    results = run_search(settings, launcher, config, arguments,
                         on_stale_trial=fail_lost_trial_run(tracking_uri))  # fmt: skip
    if settings.storage:
        close_study_run(tracking_uri, str(settings.study_name), results)
    return results
