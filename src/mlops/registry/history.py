"""Alias history, kept in the registry itself: one registered-model tag per alias move.

MLflow keeps only where an alias points now; this records who moved it from where to
where, when and why, so "what was in production on the 3rd?" has an answer. Writers hold
`registry_lock`, which makes the sequence numbers safe.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient

HISTORY_TAG_PREFIX = "mlops.alias_history."
KINDS = ("trained", "gate", "manual", "rollback", "compress")


@dataclass(frozen=True)
class AliasMove:
    seq: int
    time: str  # ISO 8601, UTC
    alias: str
    from_version: str | None
    to_version: str
    kind: str  # trained | gate | manual | rollback | compress
    reason: str
    scores: dict[str, float | None] = field(default_factory=dict)
    data_md5: str | None = None


def read_history(client: MlflowClient, model_name: str) -> list[AliasMove]:
    tags = client.get_registered_model(model_name).tags
    moves = [
        AliasMove(**json.loads(value))
        for key, value in tags.items()
        if key.startswith(HISTORY_TAG_PREFIX)
    ]
    return sorted(moves, key=lambda move: move.seq)


def current_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    aliases = client.get_registered_model(model_name).aliases
    return str(aliases[alias]) if alias in aliases else None


def move_alias(
    client: MlflowClient,
    model_name: str,
    alias: str,
    version: str,
    kind: str,
    reason: str,
    scores: dict[str, float | None] | None = None,
    data_md5: str | None = None,
) -> AliasMove:
    """Point `alias` at `version` and append the move to the history (hold the lock)."""
    history = read_history(client, model_name)
    move = AliasMove(
        seq=(history[-1].seq + 1) if history else 1,
        time=datetime.now(UTC).isoformat(timespec="seconds"),
        alias=alias,
        from_version=current_version(client, model_name, alias),
        to_version=str(version),
        kind=kind,
        reason=reason,
        scores=scores or {},
        data_md5=data_md5,
    )
    client.set_registered_model_alias(model_name, alias, str(version))
    client.set_registered_model_tag(
        model_name, f"{HISTORY_TAG_PREFIX}{move.seq:06d}", json.dumps(asdict(move))
    )
    return move


def champion_stack(history: list[AliasMove], alias: str = "champion") -> list[str]:
    """Versions that held `alias`, oldest first, as promotions push and rollbacks pop."""
    stack: list[str] = []
    for move in history:
        if move.alias != alias:
            continue
        if move.kind == "rollback":
            stack.pop()
        else:
            stack.append(move.to_version)
    return stack
