"""The promotion gate run after each training: the new version becomes `challenger`, both
it and the current `champion` are evaluated on the same data, and `champion` moves only if
the rule says the challenger wins. Why, with both scores, is tagged on the version and on
its evaluation run, so the MLflow UI shows the reason next to each version."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from mlops.errors import DataError
from mlops.registry.aliases import CHALLENGER, CHAMPION
from mlops.registry.evaluate import Evaluation, Evaluator
from mlops.registry.gate import Decision, GateRule, decide
from mlops.registry.history import current_version, move_alias
from mlops.registry.lock import registry_lock


@dataclass(frozen=True)
class GateOutcome:
    decision: Decision
    challenger: Evaluation
    champion: Evaluation | None
    champion_after: str


def _record(
    client: MlflowClient, outcome: GateOutcome, rule: GateRule, extra: Mapping[str, str]
) -> None:
    decision, challenger = outcome.decision, outcome.challenger
    tags = {
        **extra,
        "gate.decision": "promoted" if decision.promote else "rejected",
        "gate.reason": decision.reason,
        "gate.metric": rule.metric,
        "gate.challenger_score": f"{decision.challenger_score:.6f}",
        "gate.champion_score": "none"
        if decision.champion_score is None
        else f"{decision.champion_score:.6f}",
        "gate.champion_version": outcome.champion.version if outcome.champion else "none",
        "gate.data_md5": challenger.data_md5,
        "gate.data_matches_pin": challenger.data_matches_pin,
        "gate.time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for key, value in tags.items():
        client.set_model_version_tag(challenger.model_name, challenger.version, key, value)
        client.set_tag(challenger.run_id, key, value)
    verdict = gate_verdict(decision.promote, decision.reason)
    described = client.get_model_version(challenger.model_name, challenger.version).description
    client.update_model_version(
        challenger.model_name,
        challenger.version,
        description=f"{described.rstrip()} {verdict}" if described else verdict,
    )


def gate_verdict(promoted: bool, reason: str) -> str:
    """The sentence the version's description ends with, which the model page lists."""
    return f"Gate: {'promoted to @champion' if promoted else 'not promoted'} ({reason})."


# a gate's own rule: (challenger's evaluation, champion's or None, their loaded models) ->
# the decision and tags recorded beside it (mlops.rebuild.retrain_gate's)
Judge = Callable[[Evaluation, Evaluation | None, Any, Any], tuple[Decision, dict[str, str]]]


def run_gate(
    client: MlflowClient, model_name: str, version: str, rule: GateRule, evaluator: Evaluator,
    judge: Judge | None = None, challenger_kind: str = "trained", challenger_reason: str = "",
) -> GateOutcome:  # fmt: skip
    """Under the registry lock, so concurrent trainings leave exactly one champion; `judge`,
    where given, decides instead of the rule; `challenger_kind` and `challenger_reason`
    name the history's move to @challenger."""
    new = client.get_model_version(model_name, version)
    model = evaluator.load(new)  # shape check before anything moves
    with registry_lock(client, model_name):
        champion_version = current_version(client, model_name, CHAMPION)
        champion_model, incomparable, extra = None, None, {}
        if champion_version is not None:
            try:
                champion_model = evaluator.load(
                    client.get_model_version(model_name, champion_version)
                )
            except DataError as error:  # e.g. the data changed shape since the champion
                incomparable = (
                    f"champion v{champion_version} cannot be scored on this data ({error})"
                )
        move_alias(
            client, model_name, CHALLENGER, version, challenger_kind,
            challenger_reason or f"{challenger_kind} in run {new.run_id}",
        )  # fmt: skip
        challenger = evaluator.evaluate(new, model)
        champion = None
        if champion_model is not None:
            champion_ref = client.get_model_version(model_name, champion_version)
            champion = evaluator.evaluate(champion_ref, champion_model)
        if incomparable:
            decision = Decision(False, f"{incomparable}; promote by hand if intended",
                                challenger.metrics[rule.metric], None)  # fmt: skip
        elif judge is not None:
            decision, extra = judge(challenger, champion, model, champion_model)
        else:
            decision = decide(rule, challenger.metrics, champion.metrics if champion else None)
        if decision.promote:
            scores = {"challenger": decision.challenger_score, "champion": decision.champion_score}
            move_alias(
                client, model_name, CHAMPION, version, "gate", decision.reason,
                scores=scores, data_md5=challenger.data_md5,
            )  # fmt: skip
        outcome = GateOutcome(
            decision, challenger, champion, current_version(client, model_name, CHAMPION) or "none"
        )
        _record(client, outcome, rule, extra)
    return outcome
