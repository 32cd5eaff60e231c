"""Inputs standardized inside the model. Features on different scales (a CSV's income next
to its age) train badly; statistics kept as buffers of the network travel with the
registered version, so the service and `mlflow models predict` take the raw features as the
data file has them, and no separate preprocessing step can drift from training."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mlops.models.family import model_family

# an input element with less spread than this over the training split is taken as constant
MIN_STD = 1e-6


class Standardized(nn.Module):
    """(x - mean) / std per input element, then the network."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.family = model_family(net)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def from_training_split(cls, net: nn.Module, x_train: np.ndarray) -> Standardized:
        """Statistics over the training samples only (validation and test stay unseen); a
        constant element gets std 1, so it maps to 0 instead of a division by zero."""
        samples = x_train.astype(np.float64)
        mean, std = samples.mean(axis=0), samples.std(axis=0)
        std[std < MIN_STD] = 1.0
        return cls(net, torch.from_numpy(mean).float(), torch.from_numpy(std).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
