"""The Makefile's dependency graph, run by real `make` in a scratch copy of the project
where `.venv/bin/mlops` and `.venv/bin/python` are scripts that only record their calls."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.servers import taken_port

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> calls.log
if [ "$1 $2" = "data prepare" ]; then
    mkdir -p data/digits && echo bytes > data/digits/digits.npz
fi
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "data.dvc").write_text("outs: []\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("mlops", "python", "bentoml", "mlflow"):
        (bin_dir / tool).write_text(RECORDER)
        (bin_dir / tool).chmod(0o755)
    (tmp_path / ".venv" / ".installed").touch()
    set_age(tmp_path / "pyproject.toml", 300)
    set_age(tmp_path / "data.dvc", 200)
    set_age(tmp_path / ".venv" / ".installed", 100)
    return tmp_path


def make_env() -> dict[str, str]:
    """This process's environment without what an outer `make` passes down: under `make
    test ARGS="-k makefile"`, MAKEFLAGS would hand ARGS to every make run here, and a
    variable the Makefile defaults with `?=` (MODEL, VERSION, ...) set in the shell would
    replace its default."""
    defaulted = re.findall(r"^(\w+) \?=", (ROOT / "Makefile").read_text(), flags=re.M)
    outer = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", *defaulted}
    return {name: value for name, value in os.environ.items() if name not in outer}


def run_make(project: Path, *arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *arguments], cwd=project, env=make_env(), **options)


def set_age(path: Path, seconds_ago: int) -> None:
    stamp = path.stat().st_mtime - seconds_ago
    os.utime(path, (stamp, stamp))


def make(project: Path, target: str) -> list[str]:
    """The recorded calls of one `make TARGET`."""
    log = project / "calls.log"
    log.unlink(missing_ok=True)
    run_make(project, target, check=True, capture_output=True)
    return log.read_text().splitlines() if log.exists() else []


def test_train_prepares_data_only_when_missing_or_outdated(project: Path) -> None:
    assert make(project, "train") == ["mlops data prepare", "mlops train"]
    assert make(project, "train") == ["mlops train"]
    assert make(project, "evaluate")[0].startswith("mlops evaluate")

    (project / "data.dvc").touch()  # a new pin (git checkout, dvc add)
    set_age(project / "data" / "digits" / "digits.npz", 10)
    assert make(project, "train") == ["mlops data prepare", "mlops train"]


def test_make_data_always_checks(project: Path) -> None:
    make(project, "train")
    assert make(project, "data") == ["mlops data prepare"]


def test_a_project_without_data_dvc_still_trains(project: Path) -> None:
    (project / "data.dvc").unlink()
    assert make(project, "train") == ["mlops data prepare", "mlops train"]
    assert make(project, "train") == ["mlops train"]


@pytest.mark.parametrize(("target", "variable", "tool"), [("serve", "SERVE_PORT", "mlops"),
                                                          ("monitor", "MONITOR_PORT", "mlops"),
                                                          ("ui", "UI_PORT", "mlflow")])  # fmt: skip
def test_servers_refuse_a_taken_port_before_starting(
    project: Path, target: str, variable: str, tool: str
) -> None:
    (project / ".bentoml-build").mkdir()
    (project / ".bentoml-build" / "LAST_BENTO").write_text("digits-cnn-service:v1\n")
    with taken_port() as port:
        command = [target, f"{variable}={port}"]
        taken = run_make(project, *command, capture_output=True, text=True)
    assert taken.returncode != 0
    assert f"port {port} on 127.0.0.1 is taken (an earlier make {target}?)" in taken.stdout
    assert f"or make {target} {variable}={port + 1}" in taken.stdout
    assert not (project / "calls.log").exists()
    run_make(project, *command, check=True)  # free again: the server starts
    assert (project / "calls.log").read_text().startswith(f"{tool} ")


def test_predict_names_the_file_it_needs_and_passes_its_arguments(project: Path) -> None:
    missing = run_make(project, "predict", capture_output=True, text=True)
    assert missing.returncode != 0
    assert "name the file to score: make predict INPUT=new.csv" in missing.stdout
    assert not (project / "calls.log").exists()
    run_make(project, "predict", "INPUT=my file.csv", "OUTPUT=out.csv", "VERSION=3", check=True)
    call = (project / "calls.log").read_text().strip()
    assert call == "mlops predict digits-cnn my file.csv --version 3 --output out.csv"


def test_sweep_worker_names_the_study_it_needs_and_finds_the_stack(project: Path) -> None:
    missing = run_make(project, "sweep-worker", capture_output=True, text=True)
    assert missing.returncode != 0
    assert "name the study every worker joins: make sweep-worker STUDY=digits-lr" in missing.stdout
    assert not (project / "calls.log").exists()

    # no storage or tracking server in the environment: the team stack's, from mlops
    run_make(project, "sweep-worker", "STUDY=lr", "N_TRIALS=3", check=True)
    assert (project / "calls.log").read_text().splitlines() == [
        "mlops data prepare",  # the data file was missing
        "mlops server url studies",
        "mlops server url tracking",
        "mlops train hparams_search=digits_optuna hydra.sweeper.study_name=lr "
        "hydra.sweeper.n_trials=3",
    ]
    (project / "calls.log").unlink()
    env = {**make_env(), "MLOPS_STUDY_STORAGE": "postgresql+psycopg://h/optuna",
           "MLFLOW_TRACKING_URI": "http://h:5001"}  # fmt: skip
    subprocess.run(["make", "-s", "sweep-worker", "STUDY=lr"], cwd=project, env=env, check=True)
    assert (project / "calls.log").read_text().splitlines() == [
        "mlops train hparams_search=digits_optuna hydra.sweeper.study_name=lr "
        "hydra.sweeper.n_trials=20"
    ]


def test_server_targets_run_the_stack_commands(project: Path, tmp_path: Path) -> None:
    fake = tmp_path / "bin"  # PostgreSQL present: nothing to install
    fake.mkdir()
    (fake / "initdb").write_text("#!/bin/sh\n")
    (fake / "initdb").chmod(0o755)
    env = {**make_env(), "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    for target in ("server", "server-stop"):
        subprocess.run(["make", "-s", target, "ARGS=team.tracking.port=5005"], cwd=project,
                       env=env, check=True)  # fmt: skip
    assert (project / "calls.log").read_text().splitlines() == [
        "mlops server start team.tracking.port=5005",
        "mlops server stop team.tracking.port=5005",
    ]
