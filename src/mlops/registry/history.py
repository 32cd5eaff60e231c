"""Alias history, kept in the registry itself: who moved an alias from where to where, when
and why, so "what was in production on the 3rd?" has an answer. MLflow keeps only where an
alias points now.

Each move is a tag on the version it moved the alias to (`mlops.alias_move.NNNNNN`, JSON),
where the version's page shows it; the registered model carries one summary tag (the
number of moves and the latest), so its page stays about the model. Histories written as
one registered-model tag per move (`mlops.alias_history.NNNNNN`, before 2026-12) are read
as they are and moved onto their versions by the next move. Writers hold `registry_lock`,
which makes the sequence numbers safe.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException

MOVE_TAG_PREFIX = "mlops.alias_move."  # on the version moved to, one per move
SUMMARY_TAG = "mlops.alias_history"  # on the registered model: "<n> moves; latest: ..."
LEGACY_TAG_PREFIX = "mlops.alias_history."  # one registered-model tag per move, carried over
KINDS = ("trained", "gate", "manual", "rollback", "compress")


@dataclass(frozen=True)
class AliasMove:
    seq: int
    time: str  # ISO 8601, UTC
    alias: str
    from_version: str | None
    to_version: str
    kind: str  # trained | retrained | gate | manual | rollback | compress
    reason: str
    scores: dict[str, float | None] = field(default_factory=dict)
    data_md5: str | None = None


def _legacy_moves(model: RegisteredModel) -> dict[str, AliasMove]:
    return {
        key: AliasMove(**json.loads(value))
        for key, value in model.tags.items()
        if key.startswith(LEGACY_TAG_PREFIX)
    }


def read_history(client: MlflowClient, model_name: str) -> list[AliasMove]:
    legacy = _legacy_moves(client.get_registered_model(model_name))
    moves = {move.seq: move for move in legacy.values()}
    for version in client.search_model_versions(f"name = '{model_name}'"):
        for key, value in version.tags.items():
            if key.startswith(MOVE_TAG_PREFIX):
                move = AliasMove(**json.loads(value))
                moves[move.seq] = move
    return [moves[seq] for seq in sorted(moves)]


def _last_seq(client: MlflowClient, model: RegisteredModel) -> int:
    counted = re.match(r"(\d+) move", model.tags.get(SUMMARY_TAG, ""))
    if counted:
        return int(counted.group(1))
    history = read_history(client, model.name)  # no summary yet: a legacy history or none
    return history[-1].seq if history else 0


def summary(move: AliasMove, model_name: str) -> str:
    """E.g. `12 moves; latest (#12, 2026-12-04T10:00:00+00:00): @champion 3 -> 4 (gate).
    All of them: make history MODEL=digits-cnn`."""
    return (
        f"{move.seq} moves; latest (#{move.seq}, {move.time}): @{move.alias} "
        f"{move.from_version or '-'} -> {move.to_version} ({move.kind}). All of them: "
        f"make history MODEL={model_name}"
    )


def _carry_over(client: MlflowClient, model: RegisteredModel) -> None:
    """Each legacy registered-model tag becomes a tag of the version it moved the alias
    to; one whose version is gone stays where it is, still read."""
    for key, move in _legacy_moves(model).items():
        try:
            client.set_model_version_tag(
                model.name, move.to_version, f"{MOVE_TAG_PREFIX}{move.seq:06d}",
                json.dumps(asdict(move)),
            )  # fmt: skip
        except MlflowException:  # the version was deleted: keep its record
            continue
        client.delete_registered_model_tag(model.name, key)


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
    model = client.get_registered_model(model_name)
    move = AliasMove(
        seq=_last_seq(client, model) + 1,
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
    client.set_model_version_tag(
        model_name, str(version), f"{MOVE_TAG_PREFIX}{move.seq:06d}", json.dumps(asdict(move))
    )
    client.set_registered_model_tag(model_name, SUMMARY_TAG, summary(move, model_name))
    _carry_over(client, model)
    return move


def champion_stack(history: list[AliasMove], alias: str = "champion") -> list[str]:
    """Versions that held `alias`, oldest first, as promotions push and rollbacks pop. A
    rollback keeps the stack up to the version it moved back to: a pop when every move is
    recorded, and right too when a deleted version took its own moves with it."""
    stack: list[str] = []
    for move in history:
        if move.alias != alias:
            continue
        if move.kind == "rollback" and move.to_version in stack:
            del stack[len(stack) - stack[::-1].index(move.to_version) :]
        else:
            stack.append(move.to_version)
    return stack
