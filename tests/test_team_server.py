"""The team stack (make server): PostgreSQL, SeaweedFS and `mlflow server` started for real.
Four trainings at once against it make four runs and versions, one champion and a history
that replays; every artifact is in the bucket and none on local disk; a restart of the
whole stack loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops.errors import RegistryError
from mlops.registry.history import read_history
from mlops.team.object_store import s3_client
from mlops.team.processes import stop_recorded
from mlops.team.stack import TeamStack, stack_status, start_stack, stop_stack
from pipelines.train import train
from tests.conftest import FAST, KNOWN_CHATTER, ROOT
from tests.test_registry_concurrency import assert_history_replays_to, current_aliases

MODEL = "team-mlp"


def bucket_keys(stack: TeamStack) -> list[str]:
    store = stack.object_store
    client = s3_client(store.endpoint_url, store.credentials)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def launch_training(stack: TeamStack, digits_file: Path, out: Path, seed: int) -> subprocess.Popen:
    """`make train` as a team member runs it: only MLFLOW_TRACKING_URI points at the server
    (no S3 credentials in its environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_S3"))}
    env["MLFLOW_TRACKING_URI"] = stack.tracking_url
    return subprocess.Popen(
        [sys.executable, str(ROOT / "pipelines" / "train.py"), *FAST, "model=mlp",
         f"data.path={digits_file}", f"registry.model_name={MODEL}",
         f"paths.mlflow_artifacts_dir={out / 'mlartifacts'}", f"hydra.run.dir={out}",
         f"seed={seed}"],
        cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_four_trainings_at_once_then_a_restart_loses_nothing(
    team_stack: TeamStack, digits_file: Path, tmp_path: Path
) -> None:
    stack = team_stack
    assert stack_status(stack) == {"MLflow": True, "S3 endpoint": True, "PostgreSQL": True}
    outs = [tmp_path / f"job{i}" for i in range(4)]
    for out in outs:
        out.mkdir()
    jobs = [launch_training(stack, digits_file, out, seed) for seed, out in enumerate(outs)]
    outputs = [job.communicate(timeout=420)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, "\n".join(o[-2500:] for o in outputs)
    chatter = [line for line in KNOWN_CHATTER for output in outputs if line in output]
    assert not chatter, f"library chatter on the console of make train: {chatter}"

    client = MlflowClient(stack.tracking_url)
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3, 4]
    run_ids = {v.run_id for v in versions}
    assert len(run_ids) == 4
    aliases = current_aliases(client, MODEL)
    assert aliases["champion"] in {"1", "2", "3", "4"}  # exactly one: an alias is one
    assert_history_replays_to(read_history(client, MODEL), aliases)

    keys = bucket_keys(stack)
    for run_id in run_ids:  # the model, the plots, the checkpoint of every run
        mine = [k for k in keys if f"/{run_id}/" in k]
        assert any(k.endswith("plots/confusion_matrix.png") for k in mine), mine
        assert any(k.endswith(".ckpt") for k in mine), mine
    assert any(k.endswith("MLmodel") for k in keys)
    for out in outs:  # nothing written beside the jobs
        assert not (out / "mlartifacts").exists() and not (out / "mlruns").exists()
        assert not (out / "mlflow.db").exists()
    champion_run = client.get_model_version_by_alias(MODEL, "champion").run_id

    assert stop_stack(stack) == ["MLflow", "S3 endpoint", "PostgreSQL"]
    assert not any(stack_status(stack).values())
    start_stack(stack)  # the same folder: PostgreSQL's data, the bucket's objects
    client = MlflowClient(stack.tracking_url)
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 4
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == champion_run
    with tempfile.TemporaryDirectory() as local:
        plot = client.download_artifacts(champion_run, "plots/confusion_matrix.png", local)
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class StopServerAtEpoch(L.Callback):
    """The tracking server goes away mid-training: its process stopped at an epoch's end."""

    def __init__(self, pid_file: str, epoch: int) -> None:
        self.pid_file, self.epoch = Path(pid_file), epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            stop_recorded(self.pid_file)


def test_a_training_that_loses_the_server_resumes_once_it_is_back(
    team_stack: TeamStack, make_cfg, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # not minutes of retries
    server = [f"logger.tracking_uri={team_stack.tracking_url}", "model=mlp",
              "trainer.max_epochs=3", "registry.model_name=server-lost"]  # fmt: skip
    stop = ["+callbacks.lost._target_=tests.test_team_server.StopServerAtEpoch",
            f"+callbacks.lost.pid_file={team_stack.pid_file(team_stack.instance)}",
            "+callbacks.lost.epoch=1"]  # fmt: skip
    with pytest.raises(MlflowException):
        train(make_cfg(*server, *stop))  # output-0
    said = capsys.readouterr().err
    last = tmp_path / "output-0" / "checkpoints" / "last.ckpt"
    assert "the MLflow run could not be marked FAILED" in said
    assert said.rstrip().endswith(f"ckpt_path={last}")  # the resume command

    # a job started while the server is down says so before any work
    with pytest.raises(RegistryError, match="is unreachable"):
        train(make_cfg(*server))
    assert not (tmp_path / "output-1" / "checkpoints").exists()

    start_stack(team_stack)  # back: only the tracking server was down
    result = train(make_cfg(*server, f"ckpt_path={last}"))
    client = MlflowClient(team_stack.tracking_url)
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert result.model_version == "1" and result.epochs == 3
    assert client.get_model_version("server-lost", "1").run_id == result.run_id
