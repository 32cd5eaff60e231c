"""A per-model lock held in the registry itself, so alias moves from concurrent trainings
are serialized whether the store is a local sqlite file or a tracking server.

Creating a registered model is atomic (names are unique), so the lock is a registered
model named `<model>.lock`, deleted on release. A lock older than `stale_after_s` (its
holder died) is broken.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops.errors import RegistryError


def lock_name(model_name: str) -> str:
    return f"{model_name}.lock"


def _try_acquire(client: MlflowClient, name: str) -> bool:
    try:
        client.create_registered_model(
            name,
            tags={"mlops.lock": "true", "holder": f"{socket.gethostname()}:{os.getpid()}"},
            description="Held while mlops moves this model's aliases; released automatically.",
        )
    except MlflowException as error:
        # RESOURCE_DOES_NOT_EXIST: the insert collided with the holder's lock, which the
        # holder released before the store looked it up to report the collision.
        if error.error_code in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
            return False
        raise
    return True


def _break_if_stale(client: MlflowClient, name: str, stale_after_s: float) -> None:
    with contextlib.suppress(MlflowException):
        held_since_ms = client.get_registered_model(name).creation_timestamp
        if time.time() * 1000 - held_since_ms > stale_after_s * 1000:
            client.delete_registered_model(name)


@contextlib.contextmanager
def registry_lock(
    client: MlflowClient, model_name: str, timeout_s: float = 120, stale_after_s: float = 600
) -> Iterator[None]:
    name = lock_name(model_name)
    deadline = time.monotonic() + timeout_s
    while not _try_acquire(client, name):
        if time.monotonic() > deadline:
            raise RegistryError(
                f"registry lock {name!r} held for over {timeout_s:.0f} s by another process; "
                f"if none is running, delete the registered model {name!r}"
            )
        _break_if_stale(client, name, stale_after_s)
        time.sleep(0.2)
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(name)
