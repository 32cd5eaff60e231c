"""A PostgreSQL server in a folder of its own, for the team stack's tracking, auth and study
databases: initialised once (password authentication, a generated password), started and
stopped with PostgreSQL's own pg_ctl.

PostgreSQL refuses to run as root, so when mlops runs as root (CI, containers) the server
runs as an unprivileged system user (`postgres`, which Debian's package creates), and its
data folder belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import TeamError, first_line
from mlops.team.secret_files import read_or_create_secret

SUPERUSER = "mlops"  # the database role the stack's services connect as
RUN_AS_WHEN_ROOT = "postgres"


def postgres_binary(name: str) -> str:
    """`initdb`, `pg_ctl`, ...: on PATH, else where Debian puts them (not on PATH)."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise TeamError(
            f"PostgreSQL's {name} is not installed: apt-get install postgresql (make server "
            "does), or set team.postgres.url to an existing server"
        )
    return found


def run_as_user() -> str | None:
    """The unprivileged user to run PostgreSQL as, or None to run it as this user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError:
        raise TeamError(
            f"running as root, PostgreSQL needs an unprivileged user and {RUN_AS_WHEN_ROOT!r} "
            f"does not exist: useradd --system {RUN_AS_WHEN_ROOT} (the postgresql package "
            "creates it)"
        ) from None
    return RUN_AS_WHEN_ROOT


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server whose data lives in `data_dir`, listening on host:port (TCP only)."""

    data_dir: Path
    host: str
    port: int
    password_file: Path  # the superuser's password, written once at initialisation

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """`command` as the server's user; a failure raises with its own message."""
        user = run_as_user()
        full = ["runuser", "-u", user, "--", *command] if user else command
        done = subprocess.run(full, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            output = (done.stderr or done.stdout).strip()[-800:]
            raise TeamError(f"{Path(command[0]).name} failed ({done.returncode}): {output}")
        return done

    def password(self) -> str:
        if not self.password_file.is_file():
            raise TeamError(
                f"no PostgreSQL password in {self.password_file}: the team stack was never "
                "started here (make server), or set team.postgres.url to an existing server"
            )
        return self.password_file.read_text().strip()

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def initialise(self) -> None:
        """initdb with password authentication for every connection, the superuser `mlops`
        and a password generated here (kept in password_file, readable by this user only)."""
        user = run_as_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        read_or_create_secret(self.password_file)
        # initdb reads the password from a file it can open: a copy owned by its user
        handoff = self.data_dir.parent / ".initdb-password"
        handoff.write_text(self.password() + "\n")
        if user:
            account = pwd.getpwnam(user)
            for path in (self.data_dir, handoff):
                os.chown(path, account.pw_uid, account.pw_gid)
            reachable = self._run(["test", "-w", str(self.data_dir)], check=False)
            if reachable.returncode != 0:
                handoff.unlink()
                raise TeamError(
                    f"PostgreSQL runs as {user!r}, who cannot reach {self.data_dir}: make its "
                    "parent folders traversable (chmod o+x), or set team.dir elsewhere"
                )
        self.data_dir.chmod(0o700)
        try:
            self._run([
                postgres_binary("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                f"--pwfile={handoff}", "--auth=scram-sha-256", "--encoding=UTF8",
                "--no-instructions",
            ])  # fmt: skip
        finally:
            handoff.unlink(missing_ok=True)

    def start(self) -> None:
        """Start and wait until it accepts connections; TCP only (no socket folder, which
        may not exist or be writable here), on host:port."""
        if not self.initialised:
            self.initialise()
        user = run_as_user()
        self.log_file.touch()
        if user:
            account = pwd.getpwnam(user)
            os.chown(self.log_file, account.pw_uid, account.pw_gid)
        options = f"-h {self.host} -p {self.port} -c unix_socket_directories=''"
        self._run([
            postgres_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", options, "-w", "-t", "60", "start",
        ])  # fmt: skip

    def running(self) -> bool:
        if not self.initialised:
            return False
        done = self._run([postgres_binary("pg_ctl"), "-D", str(self.data_dir), "status"],
                         check=False)  # fmt: skip
        return done.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (open sessions are rolled back, committed data is kept)."""
        if self.running():
            self._run([postgres_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                       "-w", "stop"])  # fmt: skip

    def url(self, database: str) -> str:
        """SQLAlchemy's URL of `database` (psycopg 3), as MLflow and Optuna take it."""
        from urllib.parse import quote

        return (
            f"postgresql+psycopg://{SUPERUSER}:{quote(self.password(), safe='')}"
            f"@{self.host}:{self.port}/{database}"
        )

    def ensure_database(self, database: str) -> None:
        ensure_database(self.url("postgres"), database)


def ensure_database(server_url: str, database: str) -> None:
    """Create `database` on the server of `server_url` (a SQLAlchemy URL of any database
    there) unless it exists; a role that may not create one gets the statement to ask for."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    try:
        with psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, password=url.password,
            dbname=url.database or "postgres", autocommit=True, connect_timeout=10,
        ) as connection:  # fmt: skip
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{database}"')
    except psycopg.errors.InsufficientPrivilege:
        raise TeamError(
            f"database {database!r} is missing on {url.host}:{url.port} and user "
            f"{url.username!r} may not create it: ask its admin for CREATE DATABASE "
            f'"{database}" OWNER "{url.username}"'
        ) from None
    except psycopg.OperationalError as error:
        raise TeamError(f"PostgreSQL at {url.host}:{url.port}: {first_line(error)}") from None
