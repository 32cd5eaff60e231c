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

from mlflow import MlflowClient

from mlops.registry.history import read_history
from mlops.team.object_store import s3_client
from mlops.team.stack import TeamStack, stack_status, start_stack, stop_stack
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
