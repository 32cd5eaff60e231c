"""Convolutional network, 1D or 2D chosen by the rank of one input sample."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mlops.errors import ModelConfigError


class CNN(nn.Module):
    """Conv -> BatchNorm -> ReLU -> MaxPool blocks, global average pooling and a linear head.

    Inputs are channels-first: (channels, length) gives a 1D network, (channels, height,
    width) a 2D one. Each block halves the spatial size, so the input must be at least
    2**len(channels) wide along every spatial axis.
    """

    family = "cnn"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        input_shape = tuple(input_shape)
        if len(input_shape) not in (2, 3):
            raise ModelConfigError(
                f"cnn takes samples shaped (channels, length) or (channels, height, width); "
                f"got {input_shape}. Reshape the data or use model=mlp"
            )
        spatial = input_shape[1:]
        min_size = 2 ** len(channels)
        if min(spatial) < min_size:
            raise ModelConfigError(
                f"cnn with {len(channels)} pooling blocks needs spatial size >= {min_size}, "
                f"got {spatial}; use fewer model.channels or model=mlp"
            )
        conv, norm, pool = (
            (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
            if len(spatial) == 1
            else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        )
        blocks: list[nn.Module] = []
        in_channels = input_shape[0]
        for out_channels in channels:
            blocks += [
                conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                norm(out_channels),
                nn.ReLU(),
                pool(2),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*blocks)
        global_pool = nn.AdaptiveAvgPool1d(1) if len(spatial) == 1 else nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            global_pool, nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes)
        )
        if len(spatial) == 2:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            # Channels-last (NHWC) weights and inputs: oneDNN's convolutions and max pooling
            # run natively on it, where NCHW max pooling took 60% of inference here. Measured
            # on the digits CNN, 1 thread: 2.2x faster inference, 1.9x faster training steps.
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x))
