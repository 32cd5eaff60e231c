"""Accounts on the team's tracking server (team.auth.enabled): MLflow's basic-auth app with
its users in the stack's PostgreSQL. Anonymous requests and a reader's writes are refused
with one line naming what is needed; an editor trains, registers and promotes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops.cli import main
from mlops.team.processes import stop_recorded
from mlops.team.stack import TeamStack, start_tracking_server
from pipelines.train import train as train_here
from tests.conftest import CONFIG_DIR, FAST, ROOT, compose_config
from tests.servers import free_port
from tests.test_team_server import bucket_keys

MODEL = "accounts-mlp"


@pytest.fixture(scope="module")
def auth_server(team_stack: TeamStack) -> Iterator[tuple[TeamStack, list[str]]]:
    """A second tracking server, with accounts, pointed at the session stack's PostgreSQL
    and S3 as at a team's existing ones (team.postgres.url, team.s3.endpoint_url, AWS_*)."""
    server = team_stack.database_url("postgres").rsplit("/", 1)[0]
    overrides = [
        f"team.dir={team_stack.dir}", f"team.host={team_stack.host}",
        f"team.postgres.url={server}", f"team.s3.endpoint_url={team_stack.s3_endpoint}",
        f"team.tracking.port={free_port()}", "team.tracking.workers=1",
        "team.auth.enabled=true", "team.auth.database=accounts_test",  # created: missing
    ]  # fmt: skip
    stack = TeamStack(compose_config(overrides).team, instance="mlflow-auth")
    credentials = team_stack.object_store.credentials
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
        env.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
        start_tracking_server(stack)
    try:
        yield stack, overrides
    finally:
        stop_recorded(stack.pid_file(stack.instance))


def signed_in_env(stack: TeamStack, user: str | None, password: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env["MLFLOW_TRACKING_URI"] = stack.tracking_url
    if user:
        env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
    return env


def train(env: dict[str, str], digits_file: Path, out: Path) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "train.py"), *FAST, "model=mlp",
         f"data.path={digits_file}", f"registry.model_name={MODEL}", f"hydra.run.dir={out}",
         f"paths.mlflow_artifacts_dir={out / 'mla'}"],
        cwd=out, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def add_user(overrides: list[str], name: str, role: str, capsys) -> str:
    assert main(["server", "user", name, "--role", role, "--config-dir", str(CONFIG_DIR),
                 *overrides]) == 0  # fmt: skip
    return capsys.readouterr().out.splitlines()[1]  # the password, shown once


def test_anonymous_and_readers_are_refused_writes_editors_are_not(
    auth_server, team_stack: TeamStack, make_cfg, digits_file: Path, tmp_path: Path, capsys,
    monkeypatch,
) -> None:  # fmt: skip
    stack, overrides = auth_server
    admin_password = stack.auth_files.admin_password()
    assert admin_password != "password1234"  # MLflow's well-known example password
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.tracking_url)
    editor = add_user(overrides, "edith", "editor", capsys)
    reader = add_user(overrides, "ravi", "reader", capsys)

    history = ["registry", "history", MODEL, "--config-dir", str(CONFIG_DIR), *overrides]
    assert main(history) == 1  # anonymous
    asks = "asks who you are: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    assert asks in capsys.readouterr().err

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "edith")  # in this process: MLflow's
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", editor)  # client reads them per request
    edited = train_here(make_cfg(f"logger.tracking_uri={stack.tracking_url}", "model=mlp",
                                 f"registry.model_name={MODEL}"))  # fmt: skip
    assert edited.model_version == "1" and edited.gate.decision.promote

    refused = train(signed_in_env(stack, "ravi", reader), digits_file, tmp_path / "ravi")
    assert refused.returncode == 1
    needs = (
        "refused user 'ravi' runs/create: permission denied (it needs EDIT on the "
        "experiment; an admin grants it: mlops server user ravi --role editor)"
    )
    assert needs in refused.stderr
    assert "Traceback" not in refused.stderr

    # promote: a reader is refused in one line, an editor moves the alias
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ravi")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader)
    promote = ["registry", "promote", MODEL, "1", "--reason", "test", *overrides]
    assert main([*promote, "--config-dir", str(CONFIG_DIR)]) == 1
    error = capsys.readouterr().err
    assert "refused user 'ravi'" in error and "needs EDIT on the registered model" in error
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "edith")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", editor)
    assert main([*promote, "--config-dir", str(CONFIG_DIR)]) == 0
    champion = MlflowClient(stack.tracking_url).get_model_version_by_alias(MODEL, "champion")
    # through a server given an existing S3 endpoint: the artifacts are in that bucket
    assert any(f"/{champion.run_id}/" in key for key in bucket_keys(team_stack))

    # the reader, made an editor, may now write
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    assert main(["server", "user", "ravi", "--role", "editor", "--config-dir",
                 str(CONFIG_DIR), *overrides]) == 0  # fmt: skip
    assert "is now an editor" in capsys.readouterr().out
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ravi")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", reader)
    assert main([*promote, "--config-dir", str(CONFIG_DIR)]) == 0
