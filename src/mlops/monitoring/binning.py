"""Where samples fall among a reference profile's bins: the one definition the service's
counters (mlops.monitoring.live) and the offline report (mlops.monitoring.report) share,
numpy only, so an ONNX Bento without mlflow or torch can use it."""

from __future__ import annotations

import numpy as np


class ProfileBins:
    """A profile's binned features: its table features, or its principal components of
    the flattened inputs (`values` projects a batch onto them)."""

    def __init__(self, profile: dict) -> None:
        if "projection" in profile:
            fitted = profile["projection"]
            self.mean = np.asarray(fitted["mean"], dtype=np.float32)
            self.basis = np.asarray(fitted["components"], dtype=np.float32).T
            binned = {f"pc{i + 1}": b for i, b in enumerate(fitted["bins"])}
        else:
            self.mean = self.basis = None
            binned = profile["features"]
        self.names = list(binned)
        self.edges = [np.asarray(b["edges"], dtype=np.float32) for b in binned.values()]
        self.shares = [list(b["shares"]) for b in binned.values()]
        self.low = np.asarray([b["min"] for b in binned.values()], dtype=np.float32)
        self.high = np.asarray([b["max"] for b in binned.values()], dtype=np.float32)
        self.confidence_edges = np.asarray(profile["confidence"]["edges"], dtype=np.float32)

    def values(self, batch: np.ndarray) -> np.ndarray:
        """(samples, features): each sample's features, or its components."""
        values = batch.reshape(len(batch), -1)
        if self.basis is not None:
            values = (values - self.mean) @ self.basis
        return values

    def bin_counts(self, values: np.ndarray) -> list[np.ndarray]:
        """Per feature, the samples in each bin; a value on an edge counts in the bin above,
        as the profile's own shares were counted."""
        return [np.bincount(np.searchsorted(edges, values[:, column], side="right"),
                            minlength=len(edges) + 1)
                for column, edges in enumerate(self.edges)]  # fmt: skip

    def out_of_range(self, values: np.ndarray) -> np.ndarray:
        """Per feature, the values outside the training split's range."""
        return ((values < self.low) | (values > self.high)).sum(axis=0)

    def confidence_counts(self, top: np.ndarray) -> np.ndarray:
        """Answers per confidence bucket (top-1 probability; bucket 0 is below 0.5)."""
        return np.bincount(np.searchsorted(self.confidence_edges, top, side="right"),
                           minlength=len(self.confidence_edges) + 1)  # fmt: skip
