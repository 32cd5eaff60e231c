"""The team stack that `make server` starts and `make server-stop` stops: PostgreSQL, an S3
endpoint and `mlflow server` in front of both, each in the background, its data, logs and
generated secrets in one folder (team.dir), so a restart finds everything again.

team.postgres.url and team.s3.endpoint_url point the tracking server at a team's existing
database and object store instead; then only `mlflow server` runs here.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.errors import TeamError
from mlops.team.accounts import ADMIN, AuthFiles, ensure_editors_role, signed_in
from mlops.team.object_store import S3Credentials, SeaweedServer
from mlops.team.postgres import PostgresServer, ensure_database
from mlops.team.processes import recorded_pid, start_detached, stop_recorded
from mlops.team.tracking_server import server_command, upgrade_database, wait_until_healthy

SEAWEED_PORTS = ("master", "volume", "filer", "admin")  # besides S3's own


@dataclass(frozen=True)
class TeamStack:
    """Where each part of the stack lives, from the `team` config group."""

    settings: Any  # the `team` DictConfig
    instance: str = "mlflow"  # the tracking server's name for its pid and log files

    @property
    def dir(self) -> Path:
        return Path(self.settings.dir).resolve()

    @property
    def host(self) -> str:
        return str(self.settings.host)

    @property
    def tracking_url(self) -> str:
        return f"http://{self.host}:{int(self.settings.tracking.port)}"

    def _file(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def postgres(self) -> PostgresServer | None:
        """The local PostgreSQL, or None when team.postgres.url names an existing one."""
        if self.settings.postgres.url:
            return None
        return PostgresServer(
            self._file("postgres", "data"), self.host, int(self.settings.postgres.port),
            self._file("secrets", "postgres-password"),
        )  # fmt: skip

    @property
    def object_store(self) -> SeaweedServer | None:
        """The local S3 endpoint, or None when team.s3.endpoint_url names an existing one."""
        s3 = self.settings.s3
        if s3.endpoint_url:
            return None
        return SeaweedServer(
            self._file("s3", "data"), self.host, int(s3.port),
            {name: int(s3.ports[name]) for name in SEAWEED_PORTS}, str(s3.bucket),
            S3Credentials.read_or_create(self._file("secrets", "s3-credentials.json")),
        )  # fmt: skip

    def database_url(self, database: str) -> str:
        if self.settings.postgres.url:
            return f"{str(self.settings.postgres.url).rstrip('/')}/{database}"
        assert self.postgres is not None
        return self.postgres.url(database)

    @property
    def s3_endpoint(self) -> str:
        store = self.object_store
        return store.endpoint_url if store else str(self.settings.s3.endpoint_url)

    def s3_environment(self) -> dict[str, str]:
        """What the tracking server needs to reach S3: the local store's account, or for an
        existing endpoint the AWS_* variables already set."""
        store = self.object_store
        if store:
            return store.credentials.environment(store.endpoint_url)
        return {"MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint}

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.settings.s3.bucket}/{self.settings.tracking.artifacts_prefix}"

    @property
    def auth_files(self) -> AuthFiles:
        return AuthFiles(
            self._file("secrets", f"{self.instance}-auth.ini"),
            self._file("secrets", "mlflow-admin-password"),
            self._file("secrets", "flask-secret-key"),
        )

    def pid_file(self, name: str) -> Path:
        return self._file("run", f"{name}.pid")

    def log_file(self, name: str) -> Path:
        return self._file("logs", f"{name}.log")


def _refuse_taken(host: str, port: int, key: str) -> None:
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            raise TeamError(
                f"port {port} on {host} ({key}) is taken: stop what listens there, or set "
                f"{key}={port + 1}"
            )


def start_stack(stack: TeamStack) -> list[str]:
    """Start whatever part of the stack is not running; returns a line per part."""
    lines = []
    postgres = stack.postgres
    if postgres:
        if postgres.running():
            lines.append(f"PostgreSQL   {postgres.host}:{postgres.port} (already running)")
        else:
            _refuse_taken(stack.host, postgres.port, "team.postgres.port")
            postgres.start()
            lines.append(f"PostgreSQL   {postgres.host}:{postgres.port}, data {postgres.data_dir}")
    for database in (stack.settings.postgres.tracking_database,
                     stack.settings.postgres.studies_database):  # fmt: skip
        ensure_database(stack.database_url("postgres"), str(database))
    store = stack.object_store
    if store:
        if recorded_pid(stack.pid_file("s3")):
            lines.append(f"S3 endpoint  {store.endpoint_url} (already running)")
        else:
            _refuse_taken(stack.host, store.port, "team.s3.port")
            for name, port in store.ports.items():
                _refuse_taken(stack.host, port, f"team.s3.ports.{name}")
            process = start_detached(store.command(), stack.pid_file("s3"), stack.log_file("s3"))
            store.wait_until_ready(process)
            lines.append(
                f"S3 endpoint  {store.endpoint_url} (SeaweedFS), bucket {store.bucket}, "
                f"data {store.data_dir}"
            )
    if recorded_pid(stack.pid_file(stack.instance)):
        lines.append(f"MLflow       {stack.tracking_url} (already running)")
    else:
        lines.append(start_tracking_server(stack))
    return lines


def start_tracking_server(stack: TeamStack) -> str:
    """`mlflow server` on the stack's database and bucket, with accounts when
    team.auth.enabled (their database beside the tracking one)."""
    tracking, auth = stack.settings.tracking, stack.settings.auth
    _refuse_taken(stack.host, int(tracking.port), "team.tracking.port")
    backend = stack.database_url(str(stack.settings.postgres.tracking_database))
    env = {**os.environ, **stack.s3_environment(), "MLFLOW_BACKEND_STORE_URI": backend}
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's own clients must not loop to it
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if tracking.jobs else "false"
    upgrade_database(backend)
    if auth.enabled:
        ensure_database(stack.database_url("postgres"), str(auth.database))
        stack.auth_files.write_config(
            stack.database_url(str(auth.database)), str(auth.default_permission)
        )
        env |= stack.auth_files.server_environment()
    command = server_command(stack.host, int(tracking.port), int(tracking.workers),
                             stack.artifacts_destination,
                             "basic-auth" if auth.enabled else None)  # fmt: skip
    log = stack.log_file(stack.instance)
    process = start_detached(command, stack.pid_file(stack.instance), log, env)
    try:
        wait_until_healthy(stack.tracking_url, process, log)
        if auth.enabled:
            with signed_in(ADMIN, stack.auth_files.admin_password()):
                ensure_editors_role(stack.tracking_url)
    except TeamError:
        stop_recorded(stack.pid_file(stack.instance))
        raise
    accounts = f", accounts (admin: {ADMIN})" if auth.enabled else ""
    return f"MLflow       {stack.tracking_url}, artifacts {stack.artifacts_destination}{accounts}"


def stop_stack(stack: TeamStack) -> list[str]:
    """Stop the tracking server first (no request half-written), then S3, then PostgreSQL."""
    stopped = []
    if stop_recorded(stack.pid_file(stack.instance)):
        stopped.append("MLflow")
    if stop_recorded(stack.pid_file("s3")):
        stopped.append("S3 endpoint")
    postgres = stack.postgres
    if postgres and postgres.running():
        postgres.stop()
        stopped.append("PostgreSQL")
    return stopped


def stack_status(stack: TeamStack) -> dict[str, bool]:
    postgres = stack.postgres
    status = {"MLflow": recorded_pid(stack.pid_file(stack.instance)) is not None}
    if not stack.settings.s3.endpoint_url:  # a local one
        status["S3 endpoint"] = recorded_pid(stack.pid_file("s3")) is not None
    if postgres:
        status["PostgreSQL"] = postgres.running()
    return status
