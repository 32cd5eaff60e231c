"""Which label each output of a registered model stands for. Training takes any labels
(0..C-1, other integers, names) and numbers them 0..C-1 in sorted order; the values are
logged in the model's MLmodel metadata, so evaluation and the service can name them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mlops.data.validation import Label
from mlops.errors import DataError

CLASSES_KEY = "classes"  # in the MLmodel file's metadata: the label of each output


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
