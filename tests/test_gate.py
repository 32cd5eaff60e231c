"""The promotion rule as a pure function."""

from __future__ import annotations

import pytest

from mlops.errors import ModelConfigError
from mlops.registry.gate import GateRule, decide
from mlops.registry.history import AliasMove, champion_stack


def scores(
    acc: float, loss: float = 0.5, recalls: tuple[float, ...] = (1.0, 1.0)
) -> dict[str, float]:
    return {
        "test/acc": acc,
        "test/loss": loss,
        **{f"test/recall/{i}": r for i, r in enumerate(recalls)},
    }


def test_first_version_is_promoted() -> None:
    decision = decide(GateRule(), scores(0.5), None)
    assert decision.promote and decision.champion_score is None
    assert "first version" in decision.reason


def test_better_challenger_is_promoted_worse_is_refused() -> None:
    assert decide(GateRule(), scores(0.95), scores(0.90)).promote
    refused = decide(GateRule(), scores(0.90), scores(0.95))
    assert not refused.promote
    assert (
        "does not beat" in refused.reason
        and "0.9000" in refused.reason
        and "0.9500" in refused.reason
    )


def test_a_tie_is_not_a_win() -> None:
    assert not decide(GateRule(), scores(0.9), scores(0.9)).promote


def test_min_delta_is_honoured() -> None:
    rule = GateRule(min_delta=0.02)
    assert not decide(rule, scores(0.915), scores(0.90)).promote
    assert decide(rule, scores(0.925), scores(0.90)).promote


def test_minimize_direction() -> None:
    rule = GateRule(metric="test/loss", direction="minimize", min_delta=0.01)
    assert decide(rule, scores(0.9, loss=0.30), scores(0.9, loss=0.35)).promote
    assert not decide(rule, scores(0.9, loss=0.345), scores(0.9, loss=0.35)).promote


def test_per_class_floor_blocks_even_a_better_model() -> None:
    rule = GateRule(per_class_floor=0.8)
    decision = decide(rule, scores(0.99, recalls=(1.0, 0.7)), scores(0.90))
    assert not decision.promote
    assert "class 1 recall 0.7000" in decision.reason
    assert decide(rule, scores(0.99, recalls=(0.9, 0.85)), scores(0.90)).promote


def test_bad_rules_name_the_key() -> None:
    with pytest.raises(ModelConfigError, match="direction='up'"):
        GateRule(direction="up")
    with pytest.raises(ModelConfigError, match="min_delta=-1"):
        GateRule(min_delta=-1)
    with pytest.raises(ModelConfigError, match="'test/auc' is not an evaluation metric"):
        decide(GateRule(metric="test/auc"), scores(0.9), None)


def move(seq: int, to: str, kind: str, alias: str = "champion") -> AliasMove:
    return AliasMove(seq, "t", alias, None, to, kind, "r")


def test_champion_stack_pushes_promotions_and_pops_rollbacks() -> None:
    history = [
        move(1, "1", "trained", alias="challenger"),
        move(2, "1", "gate"),
        move(3, "2", "gate"),
        move(4, "3", "manual"),
        move(5, "2", "rollback"),
    ]
    assert champion_stack(history) == ["1", "2"]
