"""The registry lock against a real sqlite store, including the release race CI caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from mlops.errors import RegistryError
from mlops.registry.lock import lock_name, registry_lock


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'lock.db'}")


def test_lock_is_released_after_the_block(client: MlflowClient) -> None:
    with registry_lock(client, "m"):
        assert client.get_registered_model(lock_name("m")).name == "m.lock"
    assert not client.search_registered_models(f"name = '{lock_name('m')}'")


def test_a_held_lock_times_out_with_the_fix_in_the_message(client: MlflowClient) -> None:
    with (
        registry_lock(client, "m"),
        pytest.raises(RegistryError, match="delete the registered"),
        registry_lock(client, "m", timeout_s=0.3),
    ):
        pass


def test_release_between_collision_and_lookup_is_retried(
    client: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store reports a name collision by reading the existing model back; if the holder
    releases in between, that read says "not found". The waiter must retry, not crash."""
    client.create_registered_model(lock_name("m"))  # another process holds the lock
    lookup = SqlAlchemyStore.get_registered_model
    released = []

    def holder_releases_first(store: SqlAlchemyStore, name: str):  # type: ignore[no-untyped-def]
        if name == lock_name("m") and not released:
            released.append(name)
            store.delete_registered_model(name)
        return lookup(store, name)

    monkeypatch.setattr(SqlAlchemyStore, "get_registered_model", holder_releases_first)
    with registry_lock(client, "m", timeout_s=10):
        assert released == ["m.lock"]
        assert client.get_registered_model(lock_name("m")).name == "m.lock"
