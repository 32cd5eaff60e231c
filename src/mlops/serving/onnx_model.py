"""An ONNX version, as a serving worker runs it: MLflow's model folder read without MLflow,
the graph run by ONNX Runtime, torch never imported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from mlops.compress.runtime import onnx_forward, onnx_session


def onnx_file(mlflow_model_dir: Path) -> Path:
    """The graph file MLflow's onnx flavor recorded in the MLmodel file."""
    flavors = yaml.safe_load((mlflow_model_dir / "MLmodel").read_text())["flavors"]
    return mlflow_model_dir / flavors["onnx"]["data"]


def load_onnx_probabilities(
    mlflow_model_dir: str | Path, threads: int
) -> Callable[[np.ndarray], np.ndarray]:
    """float32 samples -> probabilities, from one InferenceSession with `threads` threads."""
    session = onnx_session(onnx_file(Path(mlflow_model_dir)), threads)
    return onnx_forward(session)


def runtime_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"
