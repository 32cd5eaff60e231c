"""The compression gate: a variant is registered only if it answers like its parent."""

from __future__ import annotations

from dataclasses import dataclass

from mlops.registry.gate import RECALL_PREFIX


@dataclass(frozen=True)
class CompressionRule:
    max_accuracy_drop: float = 0.01  # parent's test/acc minus the variant's, at most
    min_agreement: float = 0.98  # share of test samples given the parent's class, at least
    per_class_floor: float | None = None  # every class's recall at least this, when set
    min_int8_weight_share: float = 0.5  # an int8 variant: share of its weights in int8


@dataclass(frozen=True)
class Scores:
    metrics: dict[str, float]  # mlops.registry.evaluate.classification_metrics
    agreement: float = 1.0
    int8_weight_share: float | None = None  # int8 variants only


def refusals(rule: CompressionRule, parent: Scores, variant: Scores) -> list[str]:
    """Why the variant may not stand in for its parent; empty when it may."""
    reasons = []
    drop = parent.metrics["test/acc"] - variant.metrics["test/acc"]
    if drop > rule.max_accuracy_drop:
        reasons.append(f"accuracy drop {drop:.4f} > max_accuracy_drop {rule.max_accuracy_drop}")
    if variant.agreement < rule.min_agreement:
        reasons.append(f"agreement {variant.agreement:.4f} < min_agreement {rule.min_agreement}")
    if rule.per_class_floor is not None:
        low = {
            key.removeprefix(RECALL_PREFIX): value
            for key, value in variant.metrics.items()
            if key.startswith(RECALL_PREFIX) and value < rule.per_class_floor
        }
        if low:
            worst = ", ".join(f"class {c} {v:.3f}" for c, v in sorted(low.items())[:5])
            reasons.append(f"recall under per_class_floor {rule.per_class_floor}: {worst}")
    share = variant.int8_weight_share
    if share is not None and share < rule.min_int8_weight_share:
        reasons.append(
            f"only {share:.0%} of its weights are int8 (< min_int8_weight_share "
            f"{rule.min_int8_weight_share}): ONNX Runtime leaves the rest float32"
        )
    return reasons
