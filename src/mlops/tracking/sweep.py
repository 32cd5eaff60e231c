"""A Hydra sweep (`-m`) as one MLflow parent run, with each job's run nested under it.

The MLflow UI then shows the sweep as one expandable row, and the parent keeps the sweep's
command and a table of its jobs. The parent is created by the first job that gets as far as
creating its own run (under a lock in the sweep folder, so parallel launchers make one), not
when the sweep starts: a sweep whose jobs are all refused leaves no run behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

SWEEP_DIR_TAG = "mlops.sweep_dir"
# a search shared by several workers (hydra.sweeper.storage): one parent run per study,
# found by its name, since each worker has its own sweep folder
STUDY_TAG = "mlops.sweep_study"
TRIAL_TAG = "optuna.trial"  # the trial number, which is also the job's hydra.job.num
RUN_TYPE_TAG = "mlops.run_type"  # also marks the gate's evaluation runs: not a training
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
JOBS_TABLE = "sweep/jobs.json"
# what an optimizing sweeper (Optuna: hparams_search=...) writes into the sweep folder
OPTIMIZATION_RESULTS = "optimization_results.yaml"
# val/acc_best to choose by (choosing by a test metric would overfit the test split), and
# the test metrics of each job's best checkpoint
TABLE_METRICS = ("val/acc_best", "test/acc", "test/f1", "test/loss")


@dataclass(frozen=True)
class SweepJob:
    sweep_dir: Path
    job_num: int
    study: str | None = None  # the shared study's name (hydra.sweeper.storage set)


def current_sweep_job() -> SweepJob | None:
    """This job's place in a Hydra multirun; None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.sweeper
    study = sweeper.get("study_name") if sweeper.get("storage") else None
    return SweepJob(Path(hydra_cfg.sweep.dir).resolve(), int(hydra_cfg.job.num), study)


def _sweep_command(sweep_dir: Path) -> str:
    """The sweep's own overrides (`model=mlp,cnn`), from the config Hydra saves there."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return "(unknown)"
    overrides = OmegaConf.load(saved).hydra.overrides.task
    return " ".join(overrides) if overrides else "(none)"


def _find_parents(
    client, sweep_dir: Path, experiment_ids: list[str], study: str | None = None
) -> list:
    """The sweep's parent runs: one per experiment its jobs logged to (MLflow nests runs only
    within an experiment, so a sweep over `data=` gets one parent in each). A shared study's
    parent is found by the study's name."""
    key = f"tags.`{STUDY_TAG}` = '{study}'" if study else f"tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}'"
    return client.search_runs(
        experiment_ids, filter_string=f"{key} and tags.`{RUN_TYPE_TAG}` = 'sweep'"
    )


def _create_parent(client, experiment_id: str, sweep_dir: Path, study: str | None = None):
    tags = {
        RUN_TYPE_TAG: "sweep",
        SWEEP_DIR_TAG: str(sweep_dir),
        "hydra.overrides": _sweep_command(sweep_dir),
    }
    if study:
        tags[STUDY_TAG] = study
    return client.create_run(
        experiment_id, run_name=f"search {study}" if study else f"sweep {sweep_dir.name}",
        tags=tags,
    )  # fmt: skip


@contextmanager
def _parent_lock(client, job: SweepJob) -> Iterator[None]:
    """One process at a time looks for the parent and creates it: a file lock in the sweep
    folder for one machine's jobs; the registry's lock for a study's workers, which may
    be on other machines."""
    if job.study:
        from mlops.registry.lock import registry_lock

        with registry_lock(client, f"mlops-search-{job.study}"):
            yield
        return
    from filelock import FileLock

    with FileLock(job.sweep_dir / ".mlflow-sweep.lock"):
        yield


def join_sweep(client, run_id: str, experiment_id: str, job: SweepJob):
    """Nest the run under its sweep's parent run, creating the parent if this job is the
    first; returns the parent run."""
    from mlflow.entities import RunTag

    job.sweep_dir.mkdir(parents=True, exist_ok=True)
    with _parent_lock(client, job):
        parents = _find_parents(client, job.sweep_dir, [experiment_id], job.study)
        parent = (
            parents[0]
            if parents
            else _create_parent(client, experiment_id, job.sweep_dir, job.study)
        )
    tags = {
        PARENT_TAG: parent.info.run_id,
        SWEEP_DIR_TAG: str(job.sweep_dir),
        "hydra.job_num": str(job.job_num),
    }
    if job.study:
        tags |= {STUDY_TAG: job.study, TRIAL_TAG: str(job.job_num)}
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    return parent


def nest_in_sweep(logger):
    """Under `-m`, nest the logger's new run in its sweep's run and return that run."""
    job = current_sweep_job()
    if job is None:
        return None
    return join_sweep(logger.experiment, logger.run_id, logger.experiment_id, job)


def optimization_result(sweep_dir: Path) -> dict[str, Any] | None:
    """The best parameters and value an optimizing sweeper wrote, or None (a grid sweep)."""
    path = sweep_dir / OPTIMIZATION_RESULTS
    if not path.is_file():
        return None
    result = OmegaConf.to_container(OmegaConf.load(path))
    return result if isinstance(result, dict) and "best_params" in result else None


def record_jobs(client, parent, best: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Log the table of the sweep's jobs so far on its run, and the best parameters and
    value an optimizing sweeper found, as tags (`sweep.best_params`, `sweep.best_value`)."""
    rows = jobs_table(client, parent.info.run_id, parent.info.experiment_id)
    if rows:
        import pandas as pd

        client.log_table(parent.info.run_id, pd.DataFrame(rows), JOBS_TABLE)
    if best is not None and "best_params" in best:
        params = " ".join(f"{k}={v}" for k, v in best["best_params"].items())
        client.set_tag(parent.info.run_id, "sweep.best_params", params)
        client.set_tag(parent.info.run_id, "sweep.best_value", str(best["best_value"]))
    return rows


def close_sweep(client, parent, failed: bool = False) -> list[dict[str, Any]]:
    """Record the sweep's jobs (`record_jobs`) and end its run: FAILED when a job failed
    (which stops a Hydra sweep)."""
    sweep_dir = parent.data.tags.get(SWEEP_DIR_TAG)
    rows = record_jobs(client, parent, optimization_result(Path(sweep_dir)) if sweep_dir else None)
    failed = failed or any(row["status"] != "FINISHED" for row in rows)
    client.set_terminated(parent.info.run_id, "FAILED" if failed else "FINISHED")
    return rows


def fail_sweep(client, parent) -> None:
    """Called by a failing job while it handles its own error, which must stay the one
    reported: a store that cannot be reached only gets a warning here."""
    try:
        close_sweep(client, parent, failed=True)
    except Exception as error:
        warnings.warn(f"the sweep's run {parent.info.run_id} was not closed: {error}", stacklevel=2)


def jobs_table(client, parent_id: str, experiment_id: str) -> list[dict[str, Any]]:
    """One row per job: its run, overrides, metrics and registered version."""
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'"
    )
    children = sorted(children, key=lambda r: int(r.data.tags.get("hydra.job_num", -1)))
    overrides = [run.data.tags.get("hydra.overrides", "").split() for run in children]
    shared = set.intersection(*map(set, overrides)) if len(overrides) > 1 else set()
    rows = []
    for run, job_overrides in zip(children, overrides, strict=True):
        versions = client.search_model_versions(f"run_id = '{run.info.run_id}'")
        rows.append(
            {
                "job": int(run.data.tags.get("hydra.job_num", -1)),
                # what sets the jobs apart; the parent's hydra.overrides has the rest
                "overrides": " ".join(o for o in job_overrides if o not in shared) or "(same)",
                "status": run.info.status,
                **{k: run.data.metrics[k] for k in TABLE_METRICS if k in run.data.metrics},
                "model": ", ".join(f"{v.name}/{v.version}" for v in versions) or "-",
                "run_id": run.info.run_id,
            }
        )
    return rows


def jobs_rich_table(rows: list[dict[str, Any]]):
    """The jobs table as the CLI prints its other tables (`mlops.registry.show`), plain."""
    from rich.table import Table

    table = Table(box=None)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = (row.get(c, "") for c in columns)
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells))
    return table


class SweepRun(Callback):
    """Hydra callback (conf/hydra/default.yaml): when a sweep ends, its parent run gets the
    table of its jobs and is marked finished, and the table is printed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        from mlops.registry.show import print_table

        if config.hydra.sweeper.get("storage"):  # a shared study: mlops.search closes it
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        client = MlflowClient(config.logger.tracking_uri)
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
        for parent in _find_parents(client, sweep_dir, experiment_ids) if experiment_ids else []:
            rows = close_sweep(client, parent)
            print(
                f"sweep: {len(rows)} jobs in MLflow run {parent.info.run_name!r} "
                f"({parent.info.run_id}), table {JOBS_TABLE}",
                flush=True,
            )
            print_table(jobs_rich_table(rows))
            if best := optimization_result(sweep_dir):
                params = " ".join(f"{k}={v}" for k, v in best["best_params"].items())
                print(f"best {config.optimized_metric}={best['best_value']:.4f}: {params}")
