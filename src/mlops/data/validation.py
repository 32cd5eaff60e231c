"""Checks that run before any training, so bad data fails in a second with a message that
names the file, the array and the problem instead of deep inside a training step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlops.errors import DataError

Label = int | str


@dataclass(frozen=True)
class Splits:
    """Validated train/val/test arrays: float32 inputs, int64 labels 0..C-1 indexing
    `classes`, the file's own label values (integers or names), sorted."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[Label, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _check_inputs(source: Path, name: str, x: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{source}: {name} has dtype {x.dtype}; inputs must be numeric")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(
            f"{source}: {name} has shape {x.shape}; expected (samples, features...) with at "
            "least one sample"
        )
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: {name} has NaN or inf in {int(bad.sum())} sample(s) (first: sample "
            f"{first}); clean or drop them"
        )
    return x.astype(np.float32, copy=False)


def _check_labels(source: Path, name: str, y: np.ndarray, num_samples: int) -> np.ndarray:
    """One label per sample, as integers or as names (str); never missing or fractional."""
    if y.ndim != 1:
        raise DataError(f"{source}: {name} has shape {y.shape}; labels must be one per sample")
    if len(y) != num_samples:
        raise DataError(
            f"{source}: {name} has {len(y)} labels but its inputs have {num_samples} samples"
        )
    if y.dtype == np.bool_:
        return y.astype(np.int64)
    if y.dtype.kind in "US":
        return y.astype(str)
    if y.dtype == object:  # a CSV text column: str, or float NaN for an empty cell
        missing = np.flatnonzero([not isinstance(label, str) for label in y])
        if len(missing):
            raise DataError(
                f"{source}: {name} has no label in {len(missing)} sample(s) (first: sample "
                f"{int(missing[0])}); fill or drop them"
            )
        return y.astype(str)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(
            f"{source}: {name} has dtype {y.dtype}; labels must be integers or class names"
        )
    missing = np.flatnonzero(np.isnan(y)) if np.issubdtype(y.dtype, np.floating) else []
    if len(missing):
        raise DataError(
            f"{source}: {name} has no label (NaN) in {len(missing)} sample(s) (first: sample "
            f"{int(missing[0])}); fill or drop them"
        )
    integral = np.isfinite(y) & np.equal(np.mod(y, 1), 0)
    if not integral.all():
        raise DataError(
            f"{source}: {name} holds non-integer labels such as {y[~integral][:3].tolist()}; "
            "a classifier needs class labels (integers or names), not measurements"
        )
    return y.astype(np.int64)


def _encode_classes(source: Path, splits: dict[str, np.ndarray]) -> tuple[Label, ...]:
    """Replace every split's labels by their index in the training labels' sorted values:
    labels 0..C-1 keep their numbers, any others (names, 1..C, -1/1) map to 0..C-1 in
    order, and the values are kept to name the model's outputs."""
    classes = np.unique(splits["y"])
    if len(classes) < 2:
        raise DataError(
            f"{source}: y has only one class ({classes[0].item()!r}); a classifier needs "
            "samples of at least two"
        )
    for name in ("y_val", "y_test"):
        if name not in splits:
            continue
        if (splits[name].dtype.kind == "U") != (classes.dtype.kind == "U"):
            raise DataError(
                f"{source}: {name} holds {'names' if splits[name].dtype.kind == 'U' else 'numbers'}"
                f" but y holds {'names' if classes.dtype.kind == 'U' else 'numbers'}; use the "
                "same labels in every split"
            )
        unknown = np.setdiff1d(splits[name], classes)
        if len(unknown):
            raise DataError(
                f"{source}: {name} has label {unknown[0].item()!r}, which no training sample "
                f"has (training labels: {', '.join(map(str, classes[:10].tolist()))}"
                f"{', ...' if len(classes) > 10 else ''})"
            )
    for name in ("y", "y_val", "y_test"):
        if name in splits:
            splits[name] = np.searchsorted(classes, splits[name]).astype(np.int64)
    return tuple(classes.tolist())


def _check_shapes_agree(source: Path, splits: dict[str, np.ndarray]) -> None:
    expected = splits["x"].shape[1:]
    for name in ("x_val", "x_test"):
        if name in splits and splits[name].shape[1:] != expected:
            raise DataError(
                f"{source}: {name} has per-sample shape {splits[name].shape[1:]} but x has "
                f"{expected}; every split must have the same input shape"
            )


def _split_off(
    source: Path, x: np.ndarray, y: np.ndarray, fraction: float, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.{what}_fraction={fraction} must be between 0 and 1 (exclusive)")
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 else None
    try:
        x_keep, x_out, y_keep, y_out = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise DataError(
            f"{source}: cannot split {len(y)} samples into train and {what} with "
            f"{what}_fraction={fraction} ({error}); add data or change the fraction"
        ) from error
    return x_keep, y_keep, x_out, y_out


def validate_and_split(
    source: Path,
    arrays: dict[str, np.ndarray],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> Splits:
    """Validate every array, then draw the splits the file does not provide (stratified)."""
    checked: dict[str, np.ndarray] = {}
    for suffix in ("", "_val", "_test"):
        if f"x{suffix}" in arrays:
            x = _check_inputs(source, f"x{suffix}", arrays[f"x{suffix}"])
            checked[f"x{suffix}"] = x
            checked[f"y{suffix}"] = _check_labels(
                source, f"y{suffix}", arrays[f"y{suffix}"], len(x)
            )
    _check_shapes_agree(source, checked)
    classes = _encode_classes(source, checked)

    x, y = checked["x"], checked["y"]
    if "x_test" not in checked:
        x, y, checked["x_test"], checked["y_test"] = _split_off(
            source, x, y, test_fraction, seed, "test"
        )
    if "x_val" not in checked:
        x, y, checked["x_val"], checked["y_val"] = _split_off(
            source, x, y, val_fraction, seed, "val"
        )
    lost = sorted(set(np.unique(checked["y"]).tolist()) - set(np.unique(y).tolist()))
    if lost:
        raise DataError(
            f"{source}: after drawing the val/test splits, no training sample is left for "
            f"class(es) {lost[:10]} ({len(checked['y'])} samples in all); add data or lower "
            "data.val_fraction / data.test_fraction"
        )
    return Splits(
        x, y, checked["x_val"], checked["y_val"], checked["x_test"], checked["y_test"], classes
    )
