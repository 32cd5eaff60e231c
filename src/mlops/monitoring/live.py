"""Counting a served version's traffic against its reference profile, in each worker: the
bin of every input feature (or principal component), values outside the training range,
and the confidence bucket of every answer. Prometheus counters with bounded labels
(feature, bin); the reference's own shares are gauges beside them, so drift (PSI, say) is
a PromQL expression over a window rather than work in the request path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from mlops.monitoring.binning import ProfileBins

REFERENCE_FILE = "reference.json"  # in the Bento, beside deployment.json


class InputMonitor:
    """One per worker; `observe` costs a few vectorized numpy calls and one counter
    increment per non-empty bin of the batch."""

    def __init__(self, profile: dict) -> None:
        from prometheus_client import Counter, Gauge

        self.bins = ProfileBins(profile)
        self.names = self.bins.names
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
            for name, edges in zip(self.names, self.bins.edges, strict=True)
        ]
        self.outside = [outside.labels(feature=name) for name in self.names]
        buckets = ["0", *(f"{edge:g}" for edge in profile["confidence"]["edges"])]
        self.confidence = [confidence.labels(bucket=b) for b in buckets]
        for name, share_list in zip(self.names, self.bins.shares, strict=True):
            for i, share in enumerate(share_list):
                reference.labels(feature=name, bin=str(i)).set(share)
        for bucket, share in zip(buckets, profile["confidence"]["shares"], strict=True):
            reference_confidence.labels(bucket=bucket).set(share)

    @classmethod
    def from_file(cls, path: Path) -> InputMonitor:
        return cls(orjson.loads(path.read_bytes()))

    def observe(self, batch: np.ndarray, probabilities: np.ndarray) -> None:
        values = self.bins.values(batch)
        for counts, counters in zip(self.bins.bin_counts(values), self.bin_counters,
                                    strict=True):  # fmt: skip
            for index in np.flatnonzero(counts).tolist():
                counters[index].inc(int(counts[index]))
        outside = self.bins.out_of_range(values)
        for column in np.flatnonzero(outside).tolist():
            self.outside[column].inc(int(outside[column]))
        counts = self.bins.confidence_counts(probabilities.max(axis=1))
        for index in np.flatnonzero(counts).tolist():
            self.confidence[index].inc(int(counts[index]))
