"""Figures logged with every run: what the MLflow UI shows next to the numbers."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def confusion_matrix_figure(
    matrix: np.ndarray, title: str = "Test confusion matrix", classes: Sequence[object] = ()
) -> Figure:
    """Counts per (true, predicted) class, annotated so small errors are readable; axes
    labelled with the classes' labels (their indices when none are given)."""
    matrix = np.asarray(matrix)
    size = max(4.0, 0.5 * len(matrix) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    names = [str(c) for c in classes] if len(classes) == len(matrix) else range(len(matrix))
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=title,
        xticks=range(len(matrix)),
        yticks=range(len(matrix)),
        xticklabels=names,
        yticklabels=names,
    )
    if any(len(name) > 3 for name in map(str, names)):
        ax.tick_params(axis="x", labelrotation=45)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(
            col,
            row,
            int(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > threshold else "black",
        )
    fig.tight_layout()
    return fig


def learning_curves_figure(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, train against val: over- or under-fitting at a glance."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, quantity in zip(axes, ("loss", "acc"), strict=True):
        for stage in ("train", "val"):
            values = history.get(f"{stage}/{quantity}", [])
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=stage)
        ax.set(xlabel="epoch", ylabel=quantity, title=quantity)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
