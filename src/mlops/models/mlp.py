"""Multilayer perceptron: the baseline for any input shape."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mlops.errors import ModelConfigError


class MLP(nn.Module):
    """Flattens each sample, then Linear -> ReLU -> Dropout blocks and a linear head."""

    family = "mlp"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (256, 128),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not input_shape:
            raise ModelConfigError("mlp needs at least one feature per sample; got input shape ()")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
