"""DVC's S3 remote on the team stack's endpoint: `mlops server dvc-remote` configures it,
and a data version pushed from one clone is pulled, byte for byte, into another."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlops.cli import main
from mlops.team.dvc_remote import dvc_command
from tests.conftest import CONFIG_DIR
from tests.team import running_object_store
from tests.test_team_server import bucket_keys


def git(repo: Path, *arguments: str) -> None:
    subprocess.run(["git", *arguments], cwd=repo, check=True, capture_output=True)


def test_dvc_push_and_pull_through_the_stacks_s3(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    git(project, "init", "-q")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
        "-m", "start")  # fmt: skip
    dvc_command(project, "init", "-q")
    payload = bytes(range(256)) * 400
    (project / "data" / "digits.npz").write_bytes(payload)
    dvc_command(project, "add", "-q", "data")

    with running_object_store() as (stack, overrides):
        monkeypatch.chdir(project)
        assert main(["server", "dvc-remote", "--config-dir", str(CONFIG_DIR), *overrides]) == 0
        config = (project / ".dvc" / "config").read_text()
        assert "url = s3://mlflow/dvc" in config and stack.s3_endpoint in config
        assert stack.object_store.credentials.secret_key not in config  # in config.local
        assert (
            stack.object_store.credentials.secret_key
            in (project / ".dvc" / "config.local").read_text()
        )

        with pytest.raises(urllib.error.HTTPError) as anonymous:  # the bucket is private
            urllib.request.urlopen(f"{stack.s3_endpoint}/mlflow", timeout=10)
        assert anonymous.value.code == 403
        dvc_command(project, "push", "-q")
        assert any(key.startswith("dvc/files/md5/") for key in bucket_keys(stack))

        git(project, "add", "data.dvc", ".dvc/config", ".gitignore")
        git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "data")
        clone = tmp_path / "clone"
        git(tmp_path, "clone", "-q", str(project), str(clone))
        shutil.copy(project / ".dvc" / "config.local", clone / ".dvc" / "config.local")
        dvc_command(clone, "pull", "-q")
        assert (clone / "data" / "digits.npz").read_bytes() == payload
