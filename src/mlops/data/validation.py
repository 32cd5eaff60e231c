"""Checks that run before any training, so bad data fails in a second with a message that
names the file, the array and the problem instead of deep inside a training step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlops.errors import DataError


@dataclass(frozen=True)
class Splits:
    """Validated train/val/test arrays: float32 inputs, int64 labels 0..C-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


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
    if y.ndim != 1:
        raise DataError(
            f"{source}: {name} has shape {y.shape}; labels must be one integer per sample"
        )
    if len(y) != num_samples:
        raise DataError(
            f"{source}: {name} has {len(y)} labels but its inputs have {num_samples} samples"
        )
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(
            f"{source}: {name} has dtype {y.dtype}; labels must be integers 0..C-1 "
            "(encode class names as integers)"
        )
    integral = np.isfinite(y) & np.equal(np.mod(y, 1), 0)
    if not integral.all():
        raise DataError(
            f"{source}: {name} holds non-integer labels such as {y[~integral][:3].tolist()}; "
            "labels must be integers 0..C-1"
        )
    labels = y.astype(np.int64)
    if labels.min() < 0:
        raise DataError(
            f"{source}: {name} has negative label {int(labels.min())}; labels must be 0..C-1"
        )
    return labels


def _check_classes(source: Path, splits: dict[str, np.ndarray]) -> None:
    present = np.unique(splits["y"])
    num_classes = int(present.max()) + 1
    missing = sorted(set(range(num_classes)) - set(present.tolist()))
    if missing:
        raise DataError(
            f"{source}: training labels must be 0..C-1 with every class present; with C="
            f"{num_classes}, class(es) {missing[:10]} never appear in y"
        )
    for name in ("y_val", "y_test"):
        if name in splits and splits[name].max() >= num_classes:
            raise DataError(
                f"{source}: {name} has label {int(splits[name].max())}, but training labels "
                f"only go up to {num_classes - 1}"
            )


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
    _check_classes(source, checked)

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
    return Splits(x, y, checked["x_val"], checked["y_val"], checked["x_test"], checked["y_test"])
