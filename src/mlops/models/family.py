"""A network's family name: the registered model's suffix and the `model.family` tag."""

from __future__ import annotations

from torch import nn


def model_family(net: nn.Module) -> str:
    """`mlp`, `cnn`, `rnn` for the built-in networks; the class name for any other."""
    return getattr(net, "family", type(net).__name__.lower())
