"""Reading and writing dataset files as plain arrays.

Files are written byte-for-byte reproducibly, so that DVC's hash of `data/` pins the data
and `dvc status` stays clean when `make data` runs on another machine.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from mlops.errors import DataError

NPZ_SPLIT_KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def save_npz_reproducibly(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez_compressed`, minus the timestamps that make every write differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())
    tmp.replace(path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file; needs at least `x` and `y`, knows the optional split keys."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DataError(
            f"{path}: missing array(s) {', '.join(missing)}; an .npz dataset needs 'x' and 'y' "
            f"(optional: x_val, y_val, x_test, y_test), found: "
            f"{', '.join(sorted(arrays)) or 'none'}"
        )
    for split in ("val", "test"):
        present = [key for key in (f"x_{split}", f"y_{split}") if key in arrays]
        if len(present) == 1:
            raise DataError(
                f"{path}: has {present[0]} but not its pair; give both x_{split} and y_{split} "
                "or neither (then the split is drawn from x, y)"
            )
    return {key: arrays[key] for key in NPZ_SPLIT_KEYS if key in arrays}


def csv_columns(path: Path) -> list[str]:
    """A CSV file's header, read without its rows."""
    import pandas as pd

    return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def load_csv(path: Path, label_column: str) -> dict[str, np.ndarray]:
    """Feature columns and the label column of a CSV file with a header row."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from error
    if label_column not in frame.columns:
        raise DataError(
            f"{path}: no label column '{label_column}'; columns are: "
            f"{', '.join(map(str, frame.columns))}. "
            "Set data.label_column to the column that holds the class."
        )
    features = frame.drop(columns=[label_column])
    if features.shape[1] == 0:
        raise DataError(f"{path}: has only the label column '{label_column}', no feature columns")
    non_numeric = [
        str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if non_numeric:
        raise DataError(
            f"{path}: feature column(s) {', '.join(non_numeric)} are not numeric; "
            "encode them as numbers or drop them"
        )
    return {"x": features.to_numpy(), "y": frame[label_column].to_numpy()}


def load_arrays(path: Path, label_column: str = "label") -> dict[str, np.ndarray]:
    """Dispatch on the file suffix, with a clear error for a missing or unknown file."""
    if not path.exists():
        raise DataError(
            f"data file {path} does not exist; run `make data` for the built-in datasets "
            "or set data.path to your .npz/.csv file"
        )
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix == ".csv":
        return load_csv(path, label_column)
    raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .npz or .csv")
