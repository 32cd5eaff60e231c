"""Resolving version references and moving `champion` by hand: promote and rollback."""

from __future__ import annotations

import getpass
import urllib.error
import urllib.request

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops.errors import RegistryError
from mlops.registry.history import AliasMove, champion_stack, move_alias, read_history
from mlops.registry.lock import registry_lock

CHAMPION, CHALLENGER = "champion", "challenger"


def ensure_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when a server is down."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as error:
        raise RegistryError(
            f"tracking server {tracking_uri} is unreachable ({error}); start it or set "
            "MLFLOW_TRACKING_URI to a reachable store"
        ) from error


def ensure_model(client: MlflowClient, model_name: str) -> None:
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        known = sorted(
            m.name for m in client.search_registered_models() if not m.name.endswith(".lock")
        )
        listing = ", ".join(known) or "none (make train registers one)"
        raise RegistryError(
            f"no registered model {model_name!r} in {client.tracking_uri}; "
            f"registered models: {listing}"
        ) from None


def resolve_version(client: MlflowClient, model_name: str, ref: str) -> ModelVersion:
    """`3` is version 3; `@champion` (or `champion`) is whatever the alias points at."""
    ensure_model(client, model_name)
    ref = str(ref).strip()
    try:
        if ref.isdigit():
            return client.get_model_version(model_name, ref)
        return client.get_model_version_by_alias(model_name, ref.removeprefix("@"))
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        aliases = client.get_registered_model(model_name).aliases
        known = ", ".join(f"@{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
        what = f"version {ref}" if ref.isdigit() else f"alias {ref.removeprefix('@')!r}"
        raise RegistryError(f"{model_name} has no {what}; aliases: {known}") from None


def parse_model_ref(ref: str) -> tuple[str, str | None]:
    """`digits-cnn@champion` -> (digits-cnn, @champion); `digits-cnn/3` -> (digits-cnn, 3)."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, f"@{alias}"
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, version
    return ref, None


def promote(
    client: MlflowClient, model_name: str, ref: str, reason: str | None = None
) -> AliasMove:
    """Make a version champion by hand, recorded as manual with its reason."""
    version = resolve_version(client, model_name, ref)
    with registry_lock(client, model_name):
        move = move_alias(
            client, model_name, CHAMPION, str(version.version), "manual",
            reason or f"promoted by hand by {getpass.getuser()}",
        )  # fmt: skip
    client.set_model_version_tag(model_name, str(version.version), "promotion.kind", "manual")
    client.set_model_version_tag(model_name, str(version.version), "promotion.reason", move.reason)
    return move


def rollback(client: MlflowClient, model_name: str, reason: str | None = None) -> AliasMove:
    """Move champion back to the version that held it before the current one."""
    ensure_model(client, model_name)
    with registry_lock(client, model_name):
        stack = champion_stack(read_history(client, model_name))
        if len(stack) < 2:
            raise RegistryError(
                f"{model_name}: no previous champion to roll back to "
                f"(champion history: {', '.join(stack) or 'empty'})"
            )
        target = stack[-2]
        resolve_version(client, model_name, target)  # still exists?
        return move_alias(
            client, model_name, CHAMPION, target, "rollback",
            reason or f"rollback from version {stack[-1]} by {getpass.getuser()}",
        )  # fmt: skip
