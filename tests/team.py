"""The team stack for tests: PostgreSQL (installed from Debian's packages when missing),
SeaweedFS and `mlflow server`, all on free 127.0.0.1 ports, in a folder the unprivileged
PostgreSQL user can reach; stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlops.team.postgres import postgres_binary
from mlops.team.stack import SEAWEED_PORTS, TeamStack, start_stack, stop_stack
from tests.conftest import compose_config
from tests.servers import free_port


def ensure_postgres_installed() -> None:
    """CI runs as root on a machine that may lack PostgreSQL: install Debian's."""
    try:
        postgres_binary("initdb")
    except Exception:
        install = ["apt-get", "install", "-y", "-qq", "postgresql"]
        if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
            subprocess.run(install, check=True, capture_output=True, timeout=600)


def team_overrides(folder: Path, workers: int = 1) -> list[str]:
    """Free ports for every server; one tracking-server worker (make server runs 2)."""
    return [
        f"team.dir={folder}",
        f"team.tracking.port={free_port()}",
        f"team.postgres.port={free_port()}",
        f"team.s3.port={free_port()}",
        *(f"team.s3.ports.{name}={free_port()}" for name in SEAWEED_PORTS),
        f"team.tracking.workers={workers}",
    ]


def team_folder() -> Path:
    """Under /tmp, traversable by others: pytest's own temporary folders are private to
    root, and PostgreSQL runs as another user."""
    folder = Path(tempfile.mkdtemp(prefix="mlops-team-"))
    folder.chmod(0o711)
    return folder


@contextlib.contextmanager
def running_stack(folder: Path | None = None, workers: int = 1) -> Iterator[TeamStack]:
    ensure_postgres_installed()
    own = folder is None
    folder = folder or team_folder()
    stack = TeamStack(compose_config(team_overrides(folder, workers)).team)
    try:
        start_stack(stack)
        yield stack
    finally:
        stop_stack(stack)
        if own:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def running_object_store() -> Iterator[tuple[TeamStack, list[str]]]:
    """Only the stack's S3 endpoint (SeaweedFS), for what needs no tracking server; with
    the overrides that describe it to mlops commands."""
    from mlops.team.processes import start_detached, stop_recorded

    folder = team_folder()
    overrides = team_overrides(folder)
    stack = TeamStack(compose_config(overrides).team)
    store = stack.object_store
    try:
        process = start_detached(store.command(), stack.pid_file("s3"), stack.log_file("s3"))
        store.wait_until_ready(process)
        yield stack, overrides
    finally:
        stop_recorded(stack.pid_file("s3"))
        shutil.rmtree(folder, ignore_errors=True)
