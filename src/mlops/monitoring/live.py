"""Counting a served version's traffic against its reference profile, in each worker: the
bin of every input feature (or principal component), values outside the training range,
and the confidence bucket of every answer. Prometheus counters with bounded labels
(feature, bin); the reference's own shares are gauges beside them, so drift (PSI, say) is
a PromQL expression over a window rather than work in the request path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

REFERENCE_FILE = "reference.json"  # in the Bento, beside deployment.json


class InputMonitor:
    """One per worker; `observe` costs a few vectorized numpy calls and one counter
    increment per non-empty bin of the batch."""

    def __init__(self, profile: dict) -> None:
        from prometheus_client import Counter, Gauge

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
        self.low = np.asarray([b["min"] for b in binned.values()], dtype=np.float32)
        self.high = np.asarray([b["max"] for b in binned.values()], dtype=np.float32)
        self.confidence_edges = np.asarray(profile["confidence"]["edges"], dtype=np.float32)

        bins = Counter("mlops_input_bin", "Inputs per reference bin of each feature or "
                       "principal component", ["feature", "bin"])  # fmt: skip
        outside = Counter("mlops_input_out_of_range", "Input values outside the training "
                          "split's range, per feature or component", ["feature"])  # fmt: skip
        confidence = Counter("mlops_confidence_bucket", "Answers per top-1 probability "
                             "bucket (lower edge; 0 below the first)", ["bucket"])  # fmt: skip
        reference = Gauge("mlops_reference_share", "The training split's share of each bin "
                          "(the reference live bins are compared with)", ["feature", "bin"],
                          multiprocess_mode="max")  # fmt: skip
        reference_confidence = Gauge(
            "mlops_reference_confidence_share", "The validation split's share of each "
            "confidence bucket", ["bucket"], multiprocess_mode="max",
        )  # fmt: skip
        priors = Gauge("mlops_reference_class_share", "The training split's share of each "
                       "class (the served class mix is compared with)", ["label"],
                       multiprocess_mode="max")  # fmt: skip
        accuracy = Gauge("mlops_reference_accuracy", "The validation split's accuracy (live "
                         "accuracy from feedback is compared with)",
                         multiprocess_mode="max")  # fmt: skip
        for label, share in profile["class_priors"].items():
            priors.labels(label=label).set(share)
        accuracy.set(profile["confidence"]["accuracy"])
        self.bin_counters = [
            [bins.labels(feature=name, bin=str(i)) for i in range(len(edges) + 1)]
            for name, edges in zip(self.names, self.edges, strict=True)
        ]
        self.outside = [outside.labels(feature=name) for name in self.names]
        buckets = ["0", *(f"{edge:g}" for edge in profile["confidence"]["edges"])]
        self.confidence = [confidence.labels(bucket=b) for b in buckets]
        for name, share_list in zip(self.names, (b["shares"] for b in binned.values()),
                                    strict=True):  # fmt: skip
            for i, share in enumerate(share_list):
                reference.labels(feature=name, bin=str(i)).set(share)
        for bucket, share in zip(buckets, profile["confidence"]["shares"], strict=True):
            reference_confidence.labels(bucket=bucket).set(share)

    @classmethod
    def from_file(cls, path: Path) -> InputMonitor:
        return cls(orjson.loads(path.read_bytes()))

    def observe(self, batch: np.ndarray, probabilities: np.ndarray) -> None:
        values = batch.reshape(len(batch), -1)
        if self.basis is not None:
            values = (values - self.mean) @ self.basis
        for column, (edges, counters) in enumerate(zip(self.edges, self.bin_counters,
                                                       strict=True)):  # fmt: skip
            counts = np.bincount(np.searchsorted(edges, values[:, column], side="right"),
                                 minlength=len(counters))  # fmt: skip
            for index in np.flatnonzero(counts).tolist():
                counters[index].inc(int(counts[index]))
        outside = ((values < self.low) | (values > self.high)).sum(axis=0)
        for column in np.flatnonzero(outside).tolist():
            self.outside[column].inc(int(outside[column]))
        top = probabilities.max(axis=1)
        counts = np.bincount(np.searchsorted(self.confidence_edges, top, side="right"),
                             minlength=len(self.confidence))  # fmt: skip
        for index in np.flatnonzero(counts).tolist():
            self.confidence[index].inc(int(counts[index]))
