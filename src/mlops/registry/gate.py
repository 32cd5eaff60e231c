"""The promotion rule: a challenger replaces the champion only if it wins on the same data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mlops.errors import ModelConfigError

DIRECTIONS = ("maximize", "minimize")
RECALL_PREFIX = "test/recall/"


@dataclass(frozen=True)
class GateRule:
    metric: str = "test/acc"
    direction: str = "maximize"
    min_delta: float = 0.0
    per_class_floor: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ModelConfigError(
                f"registry.gate.direction={self.direction!r}; use one of {', '.join(DIRECTIONS)}"
            )
        if self.min_delta < 0:
            raise ModelConfigError(f"registry.gate.min_delta={self.min_delta} must be >= 0")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger_score: float
    champion_score: float | None


def class_floor_failures(rule: GateRule, scores: Mapping[str, float]) -> list[str]:
    if rule.per_class_floor is None:
        return []
    return [
        f"class {key.removeprefix(RECALL_PREFIX)} recall {value:.4f}"
        for key, value in sorted(scores.items())
        if key.startswith(RECALL_PREFIX) and value < rule.per_class_floor
    ]


def decide(
    rule: GateRule, challenger: Mapping[str, float], champion: Mapping[str, float] | None
) -> Decision:
    """Promote when there is no champion or the challenger wins by more than `min_delta`,
    and (if set) every class's recall clears the floor."""
    if rule.metric not in challenger:
        raise ModelConfigError(
            f"registry.gate.metric={rule.metric!r} is not an evaluation metric; "
            f"use one of {', '.join(sorted(k for k in challenger if '/recall/' not in k))}"
        )
    score = challenger[rule.metric]
    failures = class_floor_failures(rule, challenger)
    if failures:
        return Decision(
            False,
            f"per-class floor {rule.per_class_floor} not met: {', '.join(failures)}",
            score,
            champion.get(rule.metric) if champion else None,
        )
    if champion is None:
        return Decision(True, "first version: no champion yet", score, None)
    best = champion[rule.metric]
    gain = score - best if rule.direction == "maximize" else best - score
    verdict = "beats" if gain > rule.min_delta else "does not beat"
    reason = (
        f"{rule.metric} {score:.4f} vs champion {best:.4f}: {verdict} it by more than "
        f"min_delta={rule.min_delta} ({rule.direction})"
    )
    return Decision(gain > rule.min_delta, reason, score, best)
