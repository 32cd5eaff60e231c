"""Accounts on the tracking server: MLflow's basic-auth app (team.auth.enabled), its users
and permissions in the stack's PostgreSQL. Signed-in users may read everything
(team.auth.default_permission); members of the role `mlops-editors` may also train,
register and move aliases in every experiment and model. The admin's password is generated
at the first start, never MLflow's example one.

Clients sign in with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, which MLflow's
client sends with every request; a refusal is one line naming the permission it needs.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import TeamError
from mlops.team.secret_files import read_or_create_secret, write_private

ADMIN = "admin"
EDITORS_ROLE = "mlops-editors"
EDITOR_GRANTS = (("experiment", "EDIT"), ("registered_model", "EDIT"))
ROLES = ("reader", "editor")
AUTH_CACHE_S = 30
USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


@dataclass(frozen=True)
class AuthFiles:
    """What the basic-auth app reads: its config file (holding the auth database's URL,
    so mode 600), the admin's password and the Flask secret every replica shares."""

    config_file: Path
    admin_password_file: Path
    secret_key_file: Path

    def write_config(self, database_url: str, default_permission: str) -> None:
        if default_permission not in ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"):
            raise TeamError(
                f"team.auth.default_permission={default_permission!r}: write READ, EDIT, "
                "MANAGE or NO_PERMISSIONS"
            )
        config = configparser.ConfigParser(interpolation=None)
        config["mlflow"] = {
            "default_permission": default_permission,
            "database_uri": database_url,
            "admin_username": ADMIN,
            "admin_password": read_or_create_secret(self.admin_password_file),
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
            # a password's hash is checked once per AUTH_CACHE_S per worker, not on every
            # request (PBKDF2 on each of a training's hundreds of requests tripled its time);
            # a changed password or revoked account reaches the other workers within it
            "auth_cache_ttl_seconds": str(AUTH_CACHE_S),
        }
        text = io.StringIO()
        config.write(text)
        write_private(self.config_file, text.getvalue())

    def server_environment(self) -> dict[str, str]:
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(self.config_file),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": read_or_create_secret(self.secret_key_file, 32),
        }

    def admin_password(self) -> str:
        if not self.admin_password_file.is_file():
            raise TeamError(
                f"no admin password in {self.admin_password_file}: start the stack with "
                "team.auth.enabled=true first (make server ARGS=team.auth.enabled=true)"
            )
        return self.admin_password_file.read_text().strip()


def _auth_client(tracking_uri: str):
    import warnings

    with warnings.catch_warnings():  # importing MLflow's server: starlette's WSGI notice
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=tracking_uri)


def ensure_editors_role(tracking_uri: str) -> int:
    """The role whose members may write everywhere (created once); its id. Call with the
    admin signed in (MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    client = _auth_client(tracking_uri)
    for role in client.list_roles("default"):
        if role.name == EDITORS_ROLE:
            return role.id
    role = client.create_role("default", EDITORS_ROLE, "train, register and promote anywhere")
    for resource_type, permission in EDITOR_GRANTS:
        client.add_role_permission(role.id, resource_type, "*", permission)
    return role.id


@contextlib.contextmanager
def signed_in(user: str, password: str) -> Iterator[None]:
    """MLflow's clients read the credentials from the environment, per request."""
    saved = {k: os.environ.get(k) for k in (USERNAME, PASSWORD)}
    os.environ[USERNAME], os.environ[PASSWORD] = user, password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def grant_editor(tracking_uri: str, name: str) -> None:
    _auth_client(tracking_uri).assign_role(name, ensure_editors_role(tracking_uri))


def add_user(tracking_uri: str, name: str, role: str) -> str | None:
    """A new account with a generated password (returned: shown once); editors join the
    editors' role, readers keep the default permission. An existing account given the
    editor role joins it (None: its password is unchanged)."""
    from mlflow.exceptions import MlflowException

    if role not in ROLES:
        raise TeamError(f"role {role!r}: choose reader or editor")
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise TeamError(f"user name {name!r}: letters, digits and _ . @ - only")
    password: str | None = secrets.token_urlsafe(18)
    try:
        _auth_client(tracking_uri).create_user(name, password)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS" or role != "editor":
            raise TeamError(f"user {name!r}: {str(error).splitlines()[0][:300]}") from None
        password = None
    if role == "editor":
        grant_editor(tracking_uri, name)
    return password


# MLflow's REST refusal: "API request to endpoint /api/2.0/mlflow/runs/create failed with
# error code 403 != 200. Response body: 'Permission denied'"
ENDPOINT = re.compile(r"endpoint (/api/[\w/.-]+)")
WRITE_NEEDS = {
    "runs/create": "EDIT on the experiment",
    "model-versions/create": "EDIT on the registered model",
    "registered-models/alias": "EDIT on the registered model",
    "registered-models/create": "permission to create models",
}


def refusal(error: Exception, tracking_uri: str) -> TeamError | None:
    """A server's 401/403 as one line naming what was refused and what it needs; None for
    any other error."""
    code = getattr(error, "error_code", None)
    if code not in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return None
    user = os.environ.get(USERNAME)
    if code == "UNAUTHENTICATED" or not user:
        return TeamError(
            f"the tracking server {tracking_uri} asks who you are: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (an admin makes an "
            "account with: mlops server user NAME --role editor)"
        )
    match = ENDPOINT.search(str(error))
    action = match.group(1).removeprefix("/api/2.0/mlflow/") if match else "that request"
    needs = next((v for k, v in WRITE_NEEDS.items() if action.startswith(k)), "EDIT")
    return TeamError(
        f"the tracking server {tracking_uri} refused user {user!r} {action}: permission "
        f"denied (it needs {needs}; an admin grants it: mlops server user {user} --role editor)"
    )
