"""Built-in datasets, materialized from installed packages (no download) into `data/`.

`make data` writes them; `data.dvc` pins their bytes, so every run records which data it saw.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from mlops.data.arrays import save_npz_reproducibly

DIGITS_SPLIT_SEED = 0


def write_digits(data_dir: Path) -> Path:
    """scikit-learn's 1,797 real 8x8 handwritten digits, as (N, 1, 8, 8) images in [0, 1],
    with a fixed stratified 70/15/15 train/val/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.30, random_state=DIGITS_SPLIT_SEED, stratify=y
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.50, random_state=DIGITS_SPLIT_SEED, stratify=y_rest
    )
    path = data_dir / "digits" / "digits.npz"
    save_npz_reproducibly(
        path,
        {
            "x": x_train,
            "y": y_train,
            "x_val": x_val,
            "y_val": y_val,
            "x_test": x_test,
            "y_test": y_test,
        },
    )
    return path


BUILTIN_DATASETS: dict[str, Callable[[Path], Path]] = {"digits": write_digits}


def write_builtin_datasets(data_dir: Path) -> list[Path]:
    """Write every built-in dataset under `data_dir`; same bytes on every machine."""
    return [write(data_dir) for write in BUILTIN_DATASETS.values()]
