"""What gets logged to MLflow: the trained network plus a softmax, so that pyfunc
`predict` and every server built on it return class probabilities."""

from __future__ import annotations

import copy

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
