"""What gets logged to MLflow: the trained network plus a softmax, so that pyfunc
`predict` and every server built on it return class probabilities; and how the service
loads it back."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ProbabilityModel(nn.Module):
    """Network -> softmax over classes; eval mode, on the CPU, detached from Lightning."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def inference_model(net: nn.Module) -> ProbabilityModel:
    """A CPU copy in eval mode, leaving the training module untouched."""
    return ProbabilityModel(copy.deepcopy(net).cpu()).eval()


def load_probability_model(mlflow_model_dir: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A logged model in its native (pytorch) flavor, as float32 samples -> probabilities.

    MLflow's pyfunc wrapper would re-check the signature and convert types on every call;
    a service that validates its inputs itself does not need that (6% of a serving
    worker, profiled). Same module and forward pass as pyfunc `predict`."""
    import mlflow.pytorch

    model = mlflow.pytorch.load_model(str(mlflow_model_dir))

    def probabilities(inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(inputs)).numpy()

    return probabilities
