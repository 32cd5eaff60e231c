"""A rebuilt version against the original, metric by metric and prediction by prediction:
every difference shown, none rounded away."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# timings and system gauges vary from run to run whatever the model: not compared
NOT_COMPARED = ("per_sec", "system/", "time", "duration")


@dataclass(frozen=True)
class MetricRow:
    name: str
    original: float | None
    rebuilt: float | None

    @property
    def equal(self) -> bool:
        return self.original == self.rebuilt


def metric_rows(original: dict[str, float], rebuilt: dict[str, float]) -> list[MetricRow]:
    names = sorted(n for n in set(original) | set(rebuilt)
                   if not any(part in n for part in NOT_COMPARED))  # fmt: skip
    return [MetricRow(n, original.get(n), rebuilt.get(n)) for n in names]


@dataclass(frozen=True)
class PredictionDiff:
    samples: int
    labels_differ: int  # samples whose predicted class differs
    max_abs_difference: float  # largest difference of any class probability

    @property
    def equal(self) -> bool:
        return self.labels_differ == 0 and self.max_abs_difference == 0.0

    def describe(self) -> str:
        if self.equal:
            return f"all {self.samples} test predictions equal, probabilities to the bit"
        return (f"{self.labels_differ} of {self.samples} predicted classes differ; largest "
                f"probability difference {self.max_abs_difference:.3g}")  # fmt: skip


def prediction_diff(
    original_model_uri: str, rebuilt_model_uri: str, x: np.ndarray
) -> PredictionDiff:
    """Both models' class probabilities on the same inputs (each loaded by MLflow)."""
    import mlflow

    from mlops.registry.loading import load_logged_model, pyfunc_probabilities

    first, second = (
        pyfunc_probabilities(load_logged_model(mlflow.pyfunc.load_model, uri), x)
        for uri in (original_model_uri, rebuilt_model_uri)
    )
    return PredictionDiff(
        samples=len(x),
        labels_differ=int((first.argmax(1) != second.argmax(1)).sum()),
        max_abs_difference=float(np.abs(first - second).max()),
    )
