"""A rebuilt version against the original, metric by metric and prediction by prediction:
every difference shown, none rounded away."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlops.rebuild.recipe import SET_BY_REBUILD, is_placement

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


def flat(config: dict, prefix: str = "") -> dict[str, object]:
    items: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            items |= flat(value, f"{prefix}{key}.")
        else:
            items[f"{prefix}{key}"] = value
    return items


def config_differences(original: dict | None, rebuilt: dict | None) -> list[str]:
    """`key: a -> b` for each resolved config key (placement aside) the two runs disagree
    on; empty when they agree, or when either run logged no config to compare."""
    if not original or not rebuilt:
        return []
    first, second = (_rooted(flat(config)) for config in (original, rebuilt))
    keys = sorted(k for k in set(first) | set(second)
                  if k not in SET_BY_REBUILD and not is_placement(k))  # fmt: skip
    return [f"{k}: {first.get(k, '(unset)')!r} -> {second.get(k, '(unset)')!r}"
            for k in keys if first.get(k, "(unset)") != second.get(k, "(unset)")]  # fmt: skip


def _rooted(items: dict[str, object]) -> dict[str, object]:
    """Paths under the run's output folder or project root written from there: both differ
    between a training and its rebuild (a checkpoint folder, `${paths.root_dir}/.keys`)."""
    places = [(str(items.get(key) or ""), mark) for key, mark in
              (("paths.output_dir", "<output>"), ("paths.root_dir", "<root>"))]  # fmt: skip
    places = [(path, mark) for path, mark in places if path not in ("", ".")]

    def placed(value: object) -> object:
        if isinstance(value, str):
            for path, mark in places:
                value = value.replace(path, mark)
        return value

    return {key: placed(value) for key, value in items.items()}
