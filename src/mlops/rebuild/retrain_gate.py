"""The retrain gate: a retrained version replaces the champion only if it is not worse on
the pinned test split (by more than registry.gate.min_delta) and, when production labelled
enough recent samples, beats the champion on them: the data the retrain was for."""

from __future__ import annotations

import numpy as np

from mlops.rebuild.fed_back import LabelledSamples
from mlops.registry.evaluate import Evaluation
from mlops.registry.gate import Decision, GateRule, class_floor_failures, decide
from mlops.registry.loading import pyfunc_probabilities
from mlops.registry.model_metadata import logged_classes


def window_accuracy(model, window: LabelledSamples) -> float:
    """Share of the window's samples the model labels as production did."""
    probabilities = pyfunc_probabilities(model, window.x)
    classes = logged_classes(model.metadata.metadata, probabilities.shape[1])
    predicted = np.asarray([str(classes[i]) for i in probabilities.argmax(axis=1)])
    return float((predicted == np.asarray([str(label) for label in window.y])).mean())


def retrain_judge(rule: GateRule, window: LabelledSamples | None):
    """A `run_gate` judge (mlops.registry.promotion.Judge) for a retrained challenger."""

    def judge(challenger: Evaluation, champion: Evaluation | None, model, champion_model):
        if champion is None:
            return decide(rule, challenger.metrics, None), {}
        score, best = challenger.metrics[rule.metric], champion.metrics[rule.metric]
        gain = score - best if rule.direction == "maximize" else best - score
        held = gain >= -rule.min_delta
        below = "not below" if held else "below"
        reasons = [f"{rule.metric} {score:.4f} vs champion {best:.4f} on the test split: "
                   f"{below} it by more than min_delta={rule.min_delta}"]  # fmt: skip
        tags = {"retrain.gate_test_held": str(held).lower()}
        won = True
        if window is not None:
            ours, theirs = window_accuracy(model, window), window_accuracy(champion_model, window)
            won = ours > theirs
            verdict = "beats" if won else "does not beat"
            reasons.append(f"accuracy {ours:.4f} vs champion {theirs:.4f} on the {len(window)} "
                           f"most recent fed-back samples: {verdict} it")  # fmt: skip
            tags |= {"retrain.window_samples": str(len(window)),
                     "retrain.window_accuracy": f"{ours:.6f}",
                     "retrain.window_champion_accuracy": f"{theirs:.6f}"}  # fmt: skip
        else:
            reasons.append("no recent labelled window to score on")
        failures = class_floor_failures(rule, challenger.metrics)
        if failures:
            reasons.append(f"per-class floor {rule.per_class_floor} not met: {', '.join(failures)}")
        promote = held and won and not failures
        return Decision(promote, "; ".join(reasons), score, best), tags

    return judge
