"""The README's path from data to an answer, run as it is written: each line of its block,
in a fresh clone of this checkout (its own store, data and Bentos), the environment
borrowed from this one so that nothing is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import KNOWN_CHATTER, ROOT
from tests.servers import free_port, stop_group, wait_until_ready

TRY_IT = "Try the path from data to an answer"


def readme_block(heading: str) -> list[str]:
    """The lines of the first fenced block after the paragraph that starts with `heading`."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading) :]
    (block,) = re.findall(r"```bash\n(.*?)```", after, flags=re.S)[:1]
    return [line.strip() for line in block.splitlines() if line.strip()]


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A clone of HEAD using this checkout's .venv, marked installed (its pyproject older
    than the install stamp) so that make installs nothing."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("git and make are needed")
    project = tmp_path / "project"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    (project / ".venv").symlink_to(ROOT / ".venv")
    stamp = (ROOT / ".venv" / ".installed").stat().st_mtime
    os.utime(project / "pyproject.toml", (stamp - 60, stamp - 60))
    return project


def user_env() -> dict[str, str]:
    """A user's shell: none of the test session's BentoML or MLflow settings, nor an outer
    make's variables."""
    from tests.test_makefile import make_env

    return {
        name: value
        for name, value in make_env().items()
        if not name.startswith(("BENTOML_", "MLFLOW_"))
    }


def test_the_readme_path_from_training_to_an_answer_runs_as_written(clone: Path) -> None:
    lines = readme_block(TRY_IT)
    assert lines == ["make train", "make deploy", "make serve",
                     "curl -s http://127.0.0.1:3000/metadata"], lines  # fmt: skip
    env, port = user_env(), free_port()
    for line in lines[:2]:
        job = subprocess.run(line.split(), cwd=clone, env=env, capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        chatter = [c for c in KNOWN_CHATTER if c in job.stdout + job.stderr]
        assert not chatter, f"{line}: library chatter on the console: {chatter}"
        if line == "make train":
            assert "registered digits-cnn version 1" in job.stdout
        else:
            assert "built Bento digits-cnn-service:v1" in job.stdout
    log = clone / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*lines[2].split(), f"SERVE_PORT={port}"], cwd=clone, env=env,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", server, log, timeout_s=120)
        url = lines[3].split()[-1].replace(":3000", f":{port}")
        with urllib.request.urlopen(url, timeout=30) as response:
            metadata = json.loads(response.read())
        assert (metadata["model_name"], metadata["model_version"]) == ("digits-cnn", "1")
        assert metadata["alias"] == "champion" and metadata["data_matches_pin"] == "true"
    finally:
        stop_group(server)
