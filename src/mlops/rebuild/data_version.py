"""A new data version from fed-back samples: the training file with them added to its
training split, validation and test splits untouched (the pinned test split every gate
scores on), written beside it in the folder DVC tracks and recorded in data.dvc."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import yaml

from mlops.errors import UpdateError
from mlops.rebuild.fed_back import LabelledSamples


def with_samples(base: Path, samples: LabelledSamples, destination: Path) -> Path:
    if base.suffix != ".npz":
        raise UpdateError(f"{base}: fed-back samples are added to .npz data (x, y, x_val, "
                          "y_val, x_test, y_test); convert the file, or retrain without "
                          "--with-feedback")  # fmt: skip
    with np.load(base, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    if "x_test" not in arrays or "y_test" not in arrays:
        raise UpdateError(
            f"{base} has no test split of its own (x_test, y_test): adding samples would "
            "move the split the gate scores on; give it one"
        )
    shape = arrays["x"].shape[1:]
    if samples.x.shape[1:] != shape:
        raise UpdateError(
            f"the fed-back inputs have shape {samples.x.shape[1:]}, {base}'s samples "
            f"{shape}: they were answered by a model of other data"
        )
    arrays["x"] = np.concatenate([arrays["x"], samples.x.astype(arrays["x"].dtype)])
    arrays["y"] = np.concatenate([arrays["y"], samples.y.astype(arrays["y"].dtype)])
    destination.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(destination, **arrays)
    return destination


def feedback_file_name(base: Path, model_name: str, version: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return base.with_name(f"{base.stem}+feedback-{model_name}-v{version}-{stamp}.npz")


def record_data_version(dvc_file: Path, new_file: Path) -> str | None:
    """`dvc commit` of the folder data.dvc tracks, when it holds `new_file`: data.dvc pins
    the new version and DVC's cache has its bytes. The git command that records it; None
    when the file is outside that folder (its md5 is in the run either way)."""
    from dvc.repo import Repo

    from mlops.tracking.lineage import dvc_data_hash

    root = dvc_file.resolve().parent
    before = dvc_data_hash(dvc_file)
    try:
        tracked = yaml.safe_load(dvc_file.read_text())["outs"][0]["path"]
        new_file.resolve().relative_to((root / tracked).resolve())
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        return None
    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC resolves some paths from cwd
        repo.commit(dvc_file.name, force=True)
    if dvc_data_hash(dvc_file) == before:
        return None
    return f"git add {dvc_file.name} && git commit -m 'data: {new_file.name}'"
