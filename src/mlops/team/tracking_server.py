"""`mlflow server` for a team: runs, the registry and (with accounts) users in PostgreSQL,
artifacts in S3 behind the server's artifact proxy, so clients need only the server's
address, never S3 credentials. The database is brought to MLflow's schema with
`mlflow db upgrade` before the server starts, as MLflow asks after an upgrade."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

from mlops.errors import TeamError


def upgrade_database(url: str) -> None:
    """`mlflow db upgrade URL`, in this process: MLflow's tables in a new database, or an
    existing one migrated to this MLflow's schema (in-process, the URL and its password
    never show in a process list)."""
    import logging

    import mlflow.db

    notes = logging.getLogger("mlflow.store.db.utils")  # "Creating initial tables..."
    level = notes.level
    notes.setLevel(logging.WARNING)
    try:
        mlflow.db.upgrade.callback(url)
    except Exception as error:
        raise TeamError(f"mlflow db upgrade failed: {str(error).splitlines()[0][:600]}") from None
    finally:
        notes.setLevel(level)


def server_command(
    host: str, port: int, workers: int, artifacts_destination: str, app_name: str | None = None
) -> list[str]:
    """The backend store comes from MLFLOW_BACKEND_STORE_URI in the environment."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--artifacts-destination", artifacts_destination, "--serve-artifacts",
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return [*command, "--app-name", app_name] if app_name else command


def wait_until_healthy(url: str, process, log_file: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_file.read_text()[-1500:] if log_file.is_file() else ""
            raise TeamError(f"mlflow server exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TeamError(f"mlflow server on {url} not healthy in {timeout_s:.0f} s (log: {log_file})")
