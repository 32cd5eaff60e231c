"""Shared fixtures: composed configs that train in seconds against a temporary sqlite store."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# BentoML reads its store location once, at import: point it at a throwaway store before
# anything imports bentoml, so tests never touch the project's .bentoml/. Removed when the
# test process exits (each xdist worker has its own); the servers started in it are gone
# by then.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="mlops-test-bentoml-")

import itertools
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from mlops.config import compose_config as compose_train_config
from mlops.data.builtin import write_digits

atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "conf"
# what the libraries print that a job's user cannot act on; kept out of the console
KNOWN_CHATTER = (
    "Downloading artifacts",  # MLflow's bar per model load
    "INFO mlflow.",  # MLflow's store set-up lines
    "Created version '",  # MLflow's echo of the registration the job reports itself
    "Successfully registered model",
    "View run ",  # MLflow's link to every run it ends on a tracking server
    "View experiment at",
)


def torchrun_stdout(tmp_path: Path, source: str, marker: str) -> str:
    """Runs `source` as a script under torchrun, 2 processes on this machine, and returns
    what follows `marker` on the one stdout line that starts with it."""
    script = tmp_path / "job.py"
    script.write_text(source)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    job = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    (line,) = [line for line in job.stdout.splitlines() if line.startswith(marker)]
    return line.removeprefix(marker)


FAST = [
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.enable_progress_bar=false",
    "~callbacks.rich_progress_bar",
    "deploy.compile=false",  # 10-25 s a deploy; the served CNN is compiled (test_serving)
]


# what a user's own work leaves in the project, which no test may add to or change: MLflow
# artifacts of a store without an artifact root (./mlruns: the project's store is sqlite with
# mlartifacts/, so any ./mlruns is a test's), and the Bento build folder, whose LAST_BENTO
# names what `make serve` serves, and the payload log a served version writes
PROJECT_STATE = (ROOT / "mlruns", ROOT / ".bentoml-build", ROOT / "payloads")


def project_state() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text() if path.name == "LAST_BENTO" else ""
        for folder in PROJECT_STATE
        if folder.is_dir()
        for path in folder.rglob("*")
        if path.is_file() and path.name in ("LAST_BENTO", "MLmodel", "meta.yaml")
    }


@pytest.fixture(scope="session", autouse=True)
def tests_leave_the_project_alone() -> Iterator[None]:
    before = project_state()
    yield
    after = project_state()
    changed = sorted(name for name in after if before.get(name) != after[name])
    assert not changed, (
        f"the tests wrote into the project: {changed[:5]} (a deploy or a run without a "
        "temporary path; or a make deploy ran in this checkout during the tests)"
    )


# the best epoch by the lowest val/acc: the first, so that the best and the last weights
# differ and a version registered from the wrong ones shows
BEST_IS_NOT_LAST = "callbacks.model_checkpoint.mode=min"


@pytest.fixture(scope="session")
def digits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_digits(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def compose_config(overrides: list[str]) -> DictConfig:
    return compose_train_config(CONFIG_DIR, overrides)


@pytest.fixture
def make_cfg(tmp_path: Path, digits_file: Path, tracking_uri: str) -> Callable[..., DictConfig]:
    """A training config on the digits test copy, with every output under tmp_path (one
    output folder per call, as Hydra gives one per run)."""
    calls = itertools.count()

    def make(*overrides: str) -> DictConfig:
        return compose_config(
            [
                f"data.path={digits_file}",
                f"paths.root_dir={ROOT}",
                f"paths.output_dir={tmp_path / f'output-{next(calls)}'}",
                f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}",
                # deploys build (and name their LAST_BENTO, which `make serve` serves) here,
                # not in the project's .bentoml-build/
                f"paths.bento_build_dir={tmp_path / 'bento-build'}",
                f"paths.payload_dir={tmp_path / 'payloads'}",
                f"paths.bentoml_home={os.environ['BENTOML_HOME']}",
                f"logger.tracking_uri={tracking_uri}",
                *FAST,
                *overrides,
            ]
        )

    return make


@pytest.fixture(scope="module")
def servers(request, tmp_path_factory, digits_file: Path, tracking_uri: str) -> Iterator:
    """`servers(family)`: that family's champion served over HTTP (tests/served.py). Per
    module: pytest stops a module's servers before the next module's tests, so no two
    servers of one BENTOML_HOME (whose Prometheus directory they would share) overlap."""
    from tests.served import Servers

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    with Servers(tmp_path_factory, digits_file, tracking_uri, module) as serve:
        yield serve


@pytest.fixture(scope="session")
def team_stack() -> Iterator:
    """The team stack (make server: PostgreSQL, SeaweedFS, mlflow server) on free ports,
    shared by this process's server tests and stopped at its end (tests/team.py)."""
    from tests.team import running_stack

    with running_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
def server_url(team_stack) -> str:
    """A real tracking server: the team stack's (PostgreSQL runs, S3 artifacts proxied)."""
    return team_stack.tracking_url
