"""A Hydra sweep (`-m`) is one MLflow parent run with every job's run nested in it, closed
with the table of its jobs: FINISHED when all finished, FAILED when one stopped it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import ROOT
from tests.test_distributed import train_command
from tests.test_resume import STOP_AT_EPOCH_2

PARENT = "mlflow.parentRunId"


def run_sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, MlflowClient]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # as a user types it (make train ARGS="-m ..." runs this): mlops train hands `-m` to Hydra
    script = train_command(
        f"logger.tracking_uri={uri}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}",
        "registry.gate.enabled=false",
        *overrides,
        multirun=True,
    )
    command = [sys.executable, "-m", "mlops.cli", "train", *script[2:]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the stopping callback lives in tests/
    job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return job, MlflowClient(uri)


def sweep_and_jobs(client: MlflowClient) -> tuple[list, list]:
    experiment_id = client.get_experiment_by_name("digits").experiment_id
    runs = client.search_runs([experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("mlops.run_type") == "sweep"]
    jobs = sorted(
        (r for r in runs if "mlops.run_type" not in r.data.tags),
        key=lambda r: r.data.tags["hydra.job_num"],
    )
    return sweeps, jobs


def jobs_table(client: MlflowClient, run_id: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:  # else MLflow leaves its copy in /tmp
        path = client.download_artifacts(run_id, "sweep/jobs.json", folder)
        return json.loads(Path(path).read_text())


def test_a_sweep_is_one_parent_run_with_its_jobs_nested_and_tabled(tmp_path: Path) -> None:
    job, client = run_sweep(tmp_path, "seed=1,2")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]

    (sweep,), jobs = sweep_and_jobs(client)
    assert sweep.info.status == "FINISHED"
    assert "seed=1,2" in sweep.data.tags["hydra.overrides"]
    assert [r.data.tags["hydra.job_num"] for r in jobs] == ["0", "1"]
    assert all(r.data.tags[PARENT] == sweep.info.run_id for r in jobs)
    assert all(r.info.status == "FINISHED" for r in jobs)

    table = jobs_table(client, sweep.info.run_id)
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert [row["overrides"] for row in rows] == ["seed=1", "seed=2"]  # only what differs
    assert [row["run_id"] for row in rows] == [r.info.run_id for r in jobs]
    assert [row["test/acc"] for row in rows] == pytest.approx(
        [r.data.metrics["test/acc"] for r in jobs], abs=1e-9
    )
    assert [row["model"] for row in rows] == ["digits-mlp/1", "digits-mlp/2"]
    assert [row["val/acc_best"] for row in rows] == pytest.approx(
        [r.data.metrics["val/acc_best"] for r in jobs], abs=1e-9
    )
    for run, row in zip(jobs, rows, strict=True):  # each job prints its pages in the UI
        experiment = run.info.experiment_id
        assert f"/#/experiments/{experiment}/runs/{run.info.run_id} (after make ui)" in job.stdout
        assert f"/#/models/{row['model'].replace('/', '/versions/')} (after" in job.stdout
    # every job prints Lightning's lines as the first does, without the job log's prefix
    assert job.stdout.count("GPU available: False") + job.stderr.count("GPU available: False") == 2
    assert "][pytorch_lightning." not in job.stdout + job.stderr
    summary = job.stdout[job.stdout.index("sweep: 2 jobs") :].splitlines()
    assert summary[1].split()[:2] == ["job", "overrides"]
    assert summary[2].split()[:3] == ["0", "seed=1", "FINISHED"]
    # one process runs both jobs: each job's train.log holds its own lines only
    for number in ("0", "1"):
        (job_log,) = (tmp_path / "logs").glob(f"train/multiruns/*/{number}/train.log")
        lines = job_log.read_text().splitlines()
        registered = [line for line in lines if " - registered " in line]  # the job's own
        assert [line.split(" - ")[1] for line in registered] == [
            f"registered digits-mlp version {int(number) + 1}"
        ]


def test_a_stopped_sweep_marks_its_run_failed(tmp_path: Path) -> None:
    stop_at_epoch_1 = [*STOP_AT_EPOCH_2, "callbacks.stop.epoch=1"]
    job, client = run_sweep(tmp_path, "seed=1,2", *stop_at_epoch_1)
    assert job.returncode == 128 + signal.SIGTERM, job.stderr[-3000:]

    (sweep,), jobs = sweep_and_jobs(client)
    assert sweep.info.status == "FAILED"
    assert [r.info.status for r in jobs] == ["FAILED"]  # the sweep stopped at its first job
    assert jobs[0].data.tags[PARENT] == sweep.info.run_id
    table = jobs_table(client, sweep.info.run_id)
    assert [row[table["columns"].index("status")] for row in table["data"]] == ["FAILED"]


def test_an_optuna_search_maximizes_the_validation_metric_and_records_the_best(
    tmp_path: Path,
) -> None:
    """hparams_search=digits_optuna: Optuna minimizes unless told otherwise, which would
    pick the worst val/acc_best; the best trial's parameters end on the sweep's run."""
    job, client = run_sweep(tmp_path, "hparams_search=digits_optuna",
                            "hydra.sweeper.n_trials=3")  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]

    (sweep,), jobs = sweep_and_jobs(client)
    assert sweep.info.status == "FINISHED"
    assert len(jobs) == 3 and all(r.data.tags[PARENT] == sweep.info.run_id for r in jobs)
    scores = [r.data.metrics["val/acc_best"] for r in jobs]
    assert float(sweep.data.tags["sweep.best_value"]) == pytest.approx(max(scores))
    best_params = sweep.data.tags["sweep.best_params"].split()
    assert {p.split("=")[0] for p in best_params} == {
        "optimizer.lr", "optimizer.weight_decay", "data.batch_size"
    }  # fmt: skip
    assert any(
        set(best_params) <= set(run.data.tags["hydra.overrides"].split())
        for run, score in zip(jobs, scores, strict=True)
        if score == max(scores)
    )
    assert f"best val/acc_best={max(scores):.4f}: " in job.stdout
