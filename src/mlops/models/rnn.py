"""Recurrent network (GRU or LSTM) over a sequence; images are read row by row."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlops.errors import ModelConfigError

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def sequence_view(x: torch.Tensor) -> torch.Tensor:
    """(N, T) -> (N, T, 1); (N, T, F) as is; (N, C, H, W) -> (N, H, C*W): one row per step."""
    if x.dim() == 2:
        return x.unsqueeze(-1)
    if x.dim() == 4:
        return x.permute(0, 2, 1, 3).flatten(2)
    return x


class RNN(nn.Module):
    """Recurrent encoder whose last hidden state (both directions if bidirectional) feeds a
    linear head."""

    family = "rnn"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        cell: str = "gru",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ModelConfigError(
                f"model.cell={cell!r} is not a recurrent cell; use one of {sorted(CELLS)}"
            )
        input_shape = tuple(input_shape)
        if len(input_shape) not in (1, 2, 3):
            raise ModelConfigError(
                f"rnn takes samples shaped (steps,), (steps, features) or (channels, height, "
                f"width); got {input_shape}. Reshape the data or use model=mlp"
            )
        features = {1: 1, 2: input_shape[-1], 3: input_shape[0] * input_shape[-1]}[len(input_shape)]
        self.encoder = CELLS[cell](
            input_size=features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * directions, num_classes)
        self.directions = directions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.encoder(sequence_view(x))
        if isinstance(hidden, tuple):  # LSTM returns (h, c)
            hidden = hidden[0]
        last_layer = hidden[-self.directions :]  # (directions, N, H)
        return self.head(last_layer.permute(1, 0, 2).flatten(1))
