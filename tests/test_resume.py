"""`ckpt_path=`: an interrupted training resumes into its own MLflow run, or is refused with
a reason, against a temporary sqlite store."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

import pipelines.train
from mlops.tracking.resume import RUN_ID_KEY, ResumeError, config_changes, read_resume_point
from pipelines.train import train
from tests.conftest import ROOT
from tests.servers import run_own_group
from tests.test_distributed import train_command
from tests.test_train_pipeline import artifact_paths

MODEL = ["model=mlp", "trainer.max_epochs=4", "registry.model_name=resume-test"]


class TerminateAtEpoch(L.Callback):
    """A job stopped from outside: SIGTERM to the job's first process (`kill <pid>`) when
    the given epoch starts; or, with `every_process`, to all of them at once, as SLURM does
    at a time limit (and `kill -- -<process group>`), at the end of that epoch's validation,
    where the ranks run the checkpoint's collectives: Lightning 2.6 alone hung there."""

    def __init__(self, epoch: int, every_process: bool = False) -> None:
        self.epoch = epoch
        self.every_process = every_process

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every_process and self.is_time(trainer):
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_process and self.is_time(trainer) and not trainer.sanity_checking:
            os.killpg(os.getpgid(0), signal.SIGTERM)

    def is_time(self, trainer: L.Trainer) -> bool:
        return trainer.current_epoch == self.epoch and trainer.global_rank == 0


class TerminateInTest(L.Callback):
    """SIGTERM to every process of the job at its first test batch."""

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if trainer.global_rank == 0 and batch_idx == 0:
            os.killpg(os.getpgid(0), signal.SIGTERM)


STOP_AT_EPOCH_2 = [
    "+callbacks.stop._target_=tests.test_resume.TerminateAtEpoch",
    "+callbacks.stop.epoch=2",
]


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`pipelines/train.py` on the command line, in a store and log folder under tmp_path."""
    common = [
        *MODEL,
        f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}",
    ]
    if not any(override.startswith("paths.log_dir=") for override in overrides):
        common.append(f"paths.log_dir={tmp_path / 'logs'}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the stopping callback lives in tests/
    command = train_command(*common, *overrides)
    return run_own_group(command, cwd=ROOT, env=env)


def test_interrupted_training_resumes_into_its_run(
    make_cfg, tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    client = mlflow.MlflowClient(tracking_uri)
    with pytest.raises(SIGTERMException):
        train(make_cfg(*MODEL, *STOP_AT_EPOCH_2))  # output-0
    checkpoints = tmp_path / "output-0" / "checkpoints"
    last = checkpoints / "last.ckpt"
    assert f"ckpt_path={last}" in capsys.readouterr().err
    point = read_resume_point(str(last))
    run_id = point.run_id
    assert point.step == torch.load(last, weights_only=False)["global_step"] > 0
    assert client.get_run(run_id).info.status == "FAILED"
    assert len(client.get_metric_history(run_id, "val/acc")) == 2

    # What the checkpoint cannot continue is refused before the run is touched.
    with pytest.raises(ResumeError, match=r"model\.hidden_sizes: \[256, 128\] -> \[64\]"):
        train(make_cfg(*MODEL, "model.hidden_sizes=[64]", f"ckpt_path={last}"))  # output-1
    with pytest.raises(ResumeError, match=r"data\.standardize: False -> True"):
        train(make_cfg(*MODEL, "data.standardize=true", f"ckpt_path={last}"))  # output-2
    other_data = tmp_path / "other.npz"
    arrays = dict(np.load(make_cfg().data.path))
    np.savez(other_data, **{**arrays, "x": arrays["x"][::-1].copy()})
    with pytest.raises(ResumeError, match="md5"):
        train(make_cfg(*MODEL, f"data.path={other_data}", f"ckpt_path={last}"))  # output-3
    assert client.get_run(run_id).info.status == "FAILED"

    result = train(make_cfg(*MODEL, "tags=[resumed]", f"ckpt_path={last}"))  # output-4

    run = client.get_run(run_id)
    assert result.run_id == run_id
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == sorted(
        {m.step for m in client.get_metric_history(run_id, "val/acc")}
    )
    assert len(client.get_metric_history(run_id, "val/acc")) == 4  # 2 before, 2 after
    assert "test/acc" in run.data.metrics
    assert run.data.params["trainer/max_epochs"] == "4"  # params stay the first config's
    assert run.data.tags["resume.ckpt_path"] == str(last.resolve())
    assert run.data.tags["resume.from_step"] == str(point.step)
    changes = run.data.tags["resume.config_changes"]
    assert changes == (
        "callbacks.stop._target_: tests.test_resume.TerminateAtEpoch -> None; "
        "callbacks.stop.epoch: 2 -> None; tags: [] -> ['resumed']"
    )
    assert run.data.tags["tags"] == ""  # a tag the run was created with is kept
    step = run.data.tags["resume.from_step"]
    assert {
        "config/train.yaml",
        f"config/resumed-at-step-{step}.yaml",
        "environment/pip-freeze.txt",
        f"environment/pip-freeze-resumed-at-step-{step}.txt",
    } <= artifact_paths(client, run_id)
    # the checkpoint folder the run began in holds the best of all four epochs
    assert result.checkpoint_path == str((checkpoints / "best.ckpt").resolve())
    assert not (tmp_path / "output-4" / "checkpoints").exists()
    callback_states = torch.load(result.checkpoint_path, weights_only=False)["callbacks"]
    (best_score,) = [
        v["best_model_score"] for k, v in callback_states.items() if "ModelCheckpoint" in k
    ]
    assert max(m.value for m in client.get_metric_history(run_id, "val/acc")) == pytest.approx(
        best_score.item()
    )
    version = client.get_model_version("resume-test", result.model_version)
    assert version.run_id == run_id
    assert version.tags["resume.from_step"] == step

    # A finished run is not trained twice; a checkpoint needs the store its run is in.
    with pytest.raises(ResumeError, match=f"run {run_id} finished"):
        train(make_cfg(*MODEL, f"ckpt_path={last}"))
    other_store = f"sqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(ResumeError, match=f"belongs to MLflow run {run_id}, which is not in"):
        train(make_cfg(*MODEL, f"logger.tracking_uri={other_store}", f"ckpt_path={last}"))

    # Stopped and resumed is the training an uninterrupted job gives: same shuffles and
    # dropout masks (the generators' states travel in the checkpoint), same numbers.
    uninterrupted = train(make_cfg(*MODEL, "register=false"))
    for key in ("train/loss", "val/loss", "val/acc"):
        assert values(client, run_id, key) == values(client, uninterrupted.run_id, key), key
    assert run.data.metrics["test/acc"] == uninterrupted.metrics["test/acc"]


def test_a_job_that_failed_after_training_finishes_without_training_again(
    make_cfg, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Early stopping ended the training, then registering failed: the resume tests and
    registers that training, and trains no further epoch (Lightning keeps no `should_stop`
    in its checkpoints)."""
    client = mlflow.MlflowClient(tracking_uri)
    # lr 0: val/acc never improves after the first epoch, so patience 1 stops at 2 of 4 epochs
    early_stopped = [*MODEL, "optimizer.lr=0", "callbacks.early_stopping.patience=1"]

    def registry_down(*args, **kwargs):
        raise ConnectionError("registry unreachable")

    monkeypatch.setattr(pipelines.train, "log_and_register", registry_down)
    with pytest.raises(ConnectionError):
        train(make_cfg(*early_stopped))  # output-0
    last = tmp_path / "output-0" / "checkpoints" / "last.ckpt"
    hint = capsys.readouterr().err
    assert "the job failed after its 2 epochs of training" in hint
    assert hint.rstrip().endswith(f"ckpt_path={last}")
    run_id = read_resume_point(str(last)).run_id
    assert client.get_run(run_id).info.status == "FAILED"
    monkeypatch.undo()

    result = train(make_cfg(*early_stopped, f"ckpt_path={last}"))
    assert result.run_id == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.get_metric_history(run_id, "val/acc")) == 2  # no third epoch
    assert client.get_model_version("resume-test", result.model_version).run_id == run_id


def values(client: mlflow.MlflowClient, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_last_checkpoint_is_the_latest_epoch_not_the_best(make_cfg, tmp_path: Path) -> None:
    """With a learning rate of 0, val/acc never improves after the first epoch: best.ckpt
    stays at epoch 0, last.ckpt must still follow every epoch."""
    cfg = make_cfg(
        "model=mlp", "optimizer.lr=0", "trainer.max_epochs=3", "test=false", "register=false"
    )
    train(cfg)
    checkpoints = tmp_path / "output-0" / "checkpoints"
    assert torch.load(checkpoints / "best.ckpt", weights_only=False)["epoch"] == 0
    latest = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert latest["epoch"] == 2
    assert latest[RUN_ID_KEY]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_resume_needs_a_checkpoint_that_names_its_run(tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match="is not a file"):
        read_resume_point(str(tmp_path / "missing.ckpt"))
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ResumeError, match="not a readable checkpoint"):
        read_resume_point(str(text))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, foreign)
    with pytest.raises(ResumeError, match="names no MLflow run"):
        read_resume_point(str(foreign))


def test_config_changes_name_each_differing_key() -> None:
    before = {
        "a": {"b": 1, "c": [1, 2]},
        "ckpt_path": None,
        "gone": 1,
        "paths": {"output_dir": "runs/1"},
        "root": "runs/1",
        "ckpt_dir": "runs/1/checkpoints",
        "moved": "runs/1/x",
    }
    after = {
        "a": {"b": 2, "c": [1, 2]},
        "ckpt_path": "x.ckpt",
        "new": {"k": "v"},
        "paths": {"output_dir": "runs/2"},
        "root": "runs/2",
        "ckpt_dir": "runs/2/checkpoints",
        "moved": "runs/2/y",
    }
    assert config_changes(before, after) == {
        "a.b": (1, 2),
        "gone": (1, None),
        "moved": ("runs/1/x", "runs/2/y"),
        "new.k": (None, "v"),
    }


def test_resume_under_multirun_is_refused_before_anything(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = train_command(
        "seed=1,2", f"ckpt_path={tmp_path / 'last.ckpt'}", f"logger.tracking_uri={uri}",
        f"paths.log_dir={tmp_path / 'logs'}", multirun=True,
    )  # fmt: skip
    job = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert job.returncode == 1
    assert "resume it without -m" in job.stderr
    assert not mlflow.MlflowClient(uri).search_experiments(filter_string="name = 'digits'")


def test_stopped_job_exits_143_and_resumes_on_two_processes(tmp_path: Path) -> None:
    """The command line: SIGTERM gives exit status 143 and the resume hint; the resumed job
    may use another trainer (here DDP with 2 processes) and is still one run, one version."""
    stopped = run_train(tmp_path, *STOP_AT_EPOCH_2)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "weights_only" not in stopped.stdout + stopped.stderr  # no line per epoch's save
    last = next((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt"))
    # the command's own overrides, ready to paste
    (hint,) = [line for line in stopped.stderr.splitlines() if "to resume it" in line]
    assert hint.endswith(f"these overrides: {' '.join(stopped.args[2:])} ckpt_path={last}")
    assert "training stopped after 2 complete epochs;" in hint  # within epoch 2: 0 and 1 kept

    resumed = run_train(tmp_path, "trainer=ddp_cpu", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in resumed.stdout + resumed.stderr, "did not run 2 processes"
    assert resumed.stdout.count("registered resume-test version 1") == 1

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    runs = [r for r in runs if "mlops.run_type" not in r.data.tags]  # not the gate's evaluation
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) == 4
    assert "trainer.strategy" in runs[0].data.tags["resume.config_changes"]


def test_a_stopped_ddp_training_resumes_to_the_numbers_of_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    """2 processes stopped in epoch 2 by a SIGTERM to both, as SLURM sends at a time limit:
    they stop together after that epoch (Lightning 2.6 alone hung). Resumed on 2 processes,
    the training ends where an uninterrupted one does: every rank's shuffles and
    dropout masks continue where they stopped (each rank gets rank zero's generator states,
    equal to its own since all ranks are seeded alike and draw alike)."""
    ddp = ["trainer=ddp_cpu", "registry.gate.enabled=false"]
    stopped = run_train(tmp_path, *ddp, *STOP_AT_EPOCH_2, "+callbacks.stop.every_process=true")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopping every process at the end of this epoch" in stopped.stdout + stopped.stderr
    assert "training stopped after 3 complete epochs;" in stopped.stderr  # at epoch 2's end
    last = next((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt"))
    resumed = run_train(tmp_path, *ddp, f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = run_train(tmp_path, *ddp, "register=false", f"paths.log_dir={tmp_path / 'u'}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    (resumed_run,) = [r.info.run_id for r in runs if "resume.ckpt_path" in r.data.tags]
    (reference,) = [r.info.run_id for r in runs if "resume.ckpt_path" not in r.data.tags]
    for key in ("train/loss", "val/loss", "val/acc", "test/acc"):
        assert values(client, resumed_run, key) == values(client, reference, key), key
    assert len(values(client, reference, "val/acc")) == 4


def test_a_stopped_ddp_spawn_job_waits_for_its_workers_and_says_how_to_resume(
    tmp_path: Path,
) -> None:
    """ddp_spawn: the job's own process only waits for the workers it started, and Lightning
    gives it no SIGTERM handler. A SIGTERM to the job killed it at once: the workers
    trained on as orphans, and the run stayed RUNNING (or ended FINISHED with no version),
    with no resume command. A SIGTERM to one worker alone (here rank 0's) stopped the
    workers, which send no results, and the job's process waited for them forever. Now
    the worker passes the signal to the job's process, which passes it to every worker
    (as it does a signal to it or to the whole group), waits for them to stop together at
    the end of the epoch, and stops."""
    stopped = run_train(tmp_path, "trainer=ddp_spawn_cpu", *STOP_AT_EPOCH_2)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    output = stopped.stdout + stopped.stderr
    assert "stopping every process at the end of this epoch" in output
    last = next((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt"))
    # epochs 0-2: the workers stop together at the end of the epoch signalled in
    assert "training stopped after 3 complete epochs; to resume it in the same MLflow run" in output
    assert f"ckpt_path={last}" in output
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert run.info.status == "FAILED"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 3  # epochs 0-2
    assert not client.search_registered_models()


def test_a_sigterm_in_the_test_stage_stops_every_process_before_registration(
    tmp_path: Path,
) -> None:
    stopped = run_train(
        tmp_path, "trainer=ddp_cpu", "trainer.max_epochs=2",
        "+callbacks.stop._target_=tests.test_resume.TerminateInTest",
    )  # fmt: skip
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    output = stopped.stdout + stopped.stderr
    assert "stopping every process after the test, before registration" in output
    assert "the job failed after its 2 epochs of training; to finish it" in output
    assert "registered" not in stopped.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not client.search_registered_models()
