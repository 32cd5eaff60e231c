"""A search whose trials run as SLURM jobs (hydra/launcher=submitit_slurm), through
submitit's local executor, which takes the same path without a cluster: each trial is a
job of its own process, and the search, its runs and its best trial come out as in one
process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from mlops.tracking.sweep import PARENT_TAG
from tests.conftest import FAST, ROOT


def test_a_search_launches_each_trial_as_a_submitit_job(tmp_path: Path, digits_file: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "mlops.cli", "train", "hparams_search=digits_optuna",
        "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
        "hydra.sweeper.n_trials=1", *FAST, "model=mlp", "register=false",
        f"data.path={digits_file}", f"logger.tracking_uri={uri}",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.mlflow_artifacts_dir={tmp_path / 'mla'}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_STUDY_STORAGE"}
    job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "this worker ran 1 trial(s); the study holds 1 of 1" in job.stdout

    (sweep_dir,) = (tmp_path / "logs").glob("train/multiruns/*")
    submitted = sorted(sweep_dir.glob(".submitit/*/*_submitted.pkl"))
    assert len(submitted) == 1  # the trial was a submitit job
    assert all(Path(p.parent, f"{p.name.split('_')[0]}_0_result.pkl").is_file() for p in submitted)

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mlops.run_type") == "sweep"]
    trials = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(trials) == 1 and trials[0].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    best = max(r.data.metrics["val/acc_best"] for r in trials)
    assert float(parent.data.tags["sweep.best_value"]) == best
