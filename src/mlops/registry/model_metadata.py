"""What a registered model's inputs and outputs stand for, logged in its MLmodel file's
metadata: the label of each output (training takes any labels, integers or names, and
numbers them 0..C-1 in sorted order), so evaluation, the service and batch predictions can
name them; and, for a model trained on a CSV, its feature columns in input order, so batch
predictions can pick them from a file by name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mlops.data.validation import Label
from mlops.errors import DataError

CLASSES_KEY = "classes"  # the label of each output
FEATURES_KEY = "features"  # a CSV's feature columns, in input order


def model_metadata(classes: Sequence[Label], features: Sequence[str] | None) -> dict:
    return {CLASSES_KEY: list(classes), **({FEATURES_KEY: list(features)} if features else {})}


def logged_features(metadata: Mapping[str, object] | None) -> list[str] | None:
    """The feature columns the model takes, in order; None for a model not trained on a CSV."""
    features = (metadata or {}).get(FEATURES_KEY)
    return [str(f) for f in features] if isinstance(features, list) else None


def logged_classes(metadata: Mapping[str, object] | None, num_outputs: int) -> list[Label]:
    """The label each output column stands for, as logged with the model; 0..C-1 for a
    model logged without them (before labels other than 0..C-1 were taken, or by other
    code)."""
    classes = (metadata or {}).get(CLASSES_KEY)
    if isinstance(classes, list) and len(classes) == num_outputs:
        return classes
    return list(range(num_outputs))


def labels_for_model(
    labels: np.ndarray, data_classes: Sequence[Label], model_classes: Sequence[Label], label: str
) -> np.ndarray:
    """The data's labels (indices into its own sorted classes) as indices of the model's
    outputs, matched by value: a file that lacks a class the model knows numbers its
    classes differently, and one with a class the model never learnt cannot score it."""
    if list(data_classes) == list(model_classes):
        return labels
    position = {value: index for index, value in enumerate(model_classes)}
    unknown = [value for value in data_classes if value not in position]
    if unknown:
        raise DataError(
            f"the test split has label(s) {', '.join(map(repr, unknown[:5]))} that {label} "
            f"does not predict (its classes: {', '.join(map(repr, list(model_classes)[:10]))}"
            f"{', ...' if len(model_classes) > 10 else ''}); evaluate it on data with its labels"
        )
    return np.array([position[value] for value in data_classes], dtype=np.int64)[labels]
