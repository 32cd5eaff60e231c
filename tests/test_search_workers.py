"""Sweep workers sharing one Optuna study in the team stack's PostgreSQL (make sweep-worker):
the trials add up across workers, none runs twice, all are nested under one MLflow run; a
killed worker's trial is failed (its run too), not left RUNNING; a rerun continues."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from mlops.team.stack import TeamStack
from mlops.tracking.sweep import PARENT_TAG, RUN_TYPE_TAG, STUDY_TAG, TRIAL_TAG
from tests.conftest import FAST, ROOT

STUDY = "workers-test"


def worker(stack: TeamStack, digits_file: Path, folder: Path, n_trials: int) -> subprocess.Popen:
    """`make sweep-worker` as each team member runs it: the study's storage from the
    environment, the tracking server from MLFLOW_TRACKING_URI."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": stack.tracking_url,
           "MLOPS_STUDY_STORAGE": stack.database_url("optuna")}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlops.cli", "train", "hparams_search=digits_optuna",
        f"hydra.sweeper.study_name={STUDY}", f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=4",
        *FAST, "model=mlp", "register=false", f"data.path={digits_file}",
        f"paths.log_dir={folder / 'logs'}", f"paths.mlflow_artifacts_dir={folder / 'mla'}",
    ]  # fmt: skip
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def finish(job: subprocess.Popen) -> str:
    output = job.communicate(timeout=400)[0]
    assert job.returncode == 0, output[-4000:]
    return output


def trials_run(output: str) -> int:
    (line,) = [line for line in output.splitlines() if f"search {STUDY}: this worker ran" in line]
    return int(line.split("ran ")[1].split()[0])


def running_trial_of(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker", "").endswith(f":{pid}"):
            return trial
    return None


def run_of(client: MlflowClient, trial: int) -> list:
    experiment = client.get_experiment_by_name("digits")
    if experiment is None:
        return []
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{STUDY}' and tags.`{TRIAL_TAG}` = '{trial}'",
    )


def test_two_workers_share_a_study_and_a_killed_workers_trial_is_failed(
    team_stack: TeamStack, digits_file: Path, tmp_path: Path
) -> None:
    storage = team_stack.database_url("optuna")
    first = worker(team_stack, digits_file, tmp_path / "a", n_trials=4)
    doomed = worker(team_stack, digits_file, tmp_path / "b", n_trials=4)

    # kill the second worker in the middle of a trial (its run started), once it has
    # finished one
    client = MlflowClient(team_stack.tracking_url)
    deadline = time.monotonic() + 240
    victim = None
    while victim is None and time.monotonic() < deadline and doomed.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=STUDY, storage=storage)
        except KeyError:  # not created yet
            continue
        mine = [t for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("worker", "").endswith(f":{doomed.pid}")]  # fmt: skip
        running = running_trial_of(study, doomed.pid)
        if (
            running
            and any(t.state == TrialState.COMPLETE for t in mine)
            and run_of(client, running.number)
        ):
            victim = running
    assert victim is not None, "the second worker never ran a second trial"
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.communicate()

    ran_first = trials_run(finish(first))
    # rerun with a larger budget: the study continues where it stands
    ran_rerun = trials_run(finish(worker(team_stack, digits_file, tmp_path / "c", n_trials=5)))

    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert states[victim.number] == TrialState.FAIL  # not left RUNNING
    assert not [n for n, s in states.items() if s == TrialState.RUNNING]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 5
    killed_worker_completed = len(trials) - 1 - ran_first - ran_rerun  # all it began but one
    assert killed_worker_completed >= 1
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none twice

    client = MlflowClient(team_stack.tracking_url)
    experiment = client.get_experiment_by_name("digits").experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.`{STUDY_TAG}` = '{STUDY}'")
    (parent,) = [r for r in runs if r.data.tags.get(RUN_TYPE_TAG) == "sweep"]
    children = [r for r in runs if r.data.tags.get(RUN_TYPE_TAG) != "sweep"]
    assert all(r.data.tags[PARENT_TAG] == parent.info.run_id for r in children)
    by_trial = {int(r.data.tags[TRIAL_TAG]): r for r in children}
    assert len(by_trial) == len(children) == len(trials)  # one run per trial, none twice
    assert by_trial[victim.number].info.status == "FAILED"
    assert all(by_trial[t.number].info.status == "FINISHED" for t in complete)
    for trial in complete:  # each trial's value is its run's optimized metric
        metric = by_trial[trial.number].data.metrics["val/acc_best"]
        assert trial.value == pytest.approx(metric)
    assert parent.info.status == "FINISHED"
    assert float(parent.data.tags["sweep.best_value"]) == max(t.value for t in complete)
