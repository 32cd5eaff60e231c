"""ONNX Runtime sessions as mlops runs them: CPU only, a fixed number of threads, float32."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def onnx_session(model: str | Path | bytes, threads: int = 1):
    """One inference session on the CPU with `threads` threads for one operator and none
    across operators: a worker with more threads than its share of cores only waits."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: ORT warns on every unused initializer
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_forward(session) -> Callable[[np.ndarray], np.ndarray]:
    """samples -> the session's one output; ONNX Runtime refuses float64, so cast first."""
    (model_input,) = session.get_inputs()
    name = model_input.name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return forward
