"""Loading a logged model without leaving a copy of it behind.

From a store whose artifacts are not local files (an `mlflow server` proxying them, S3, ...)
MLflow downloads the model into a temporary folder of its own and never removes it: with a
tracking server, each training left two or three copies of its model in /tmp (the check of
the logged graph and the gate's champion and candidate). Here the download goes to a folder
that is removed once the model is in memory; a local store's model is copied there too,
which is the price of one code path.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import TypeVar

import numpy as np

Model = TypeVar("Model")


def load_logged_model(load: Callable[..., Model], model_uri: str) -> Model:
    """`load(model_uri, dst_path=...)`: `mlflow.pyfunc.load_model`, `mlflow.pytorch.load_model`."""
    with tempfile.TemporaryDirectory(prefix="mlops-model-") as folder:
        return load(model_uri, dst_path=folder)


def pyfunc_probabilities(model, x: np.ndarray) -> np.ndarray:
    """A pyfunc model's answer for `x` as one array: MLflow's onnx flavor answers an array
    input with a dict of its graph's outputs (ours has one, the probabilities)."""
    answer = model.predict(x)
    if isinstance(answer, dict):
        if len(answer) != 1:
            raise ValueError(
                f"the model answers {len(answer)} outputs ({', '.join(answer)}); mlops scores "
                "models with one output, the class probabilities"
            )
        (answer,) = answer.values()
    return np.asarray(answer)
