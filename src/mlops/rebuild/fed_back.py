"""Production's labelled samples: the payload log's sampled answers (their inputs) joined
with the labels fed back to /feedback (request id and index), oldest first. The newest
share is kept out of training, as the recent window the retrain gate scores both models
on; the rest becomes training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlops.monitoring.payloads import read_payloads


@dataclass(frozen=True)
class LabelledSamples:
    x: np.ndarray
    y: np.ndarray
    times: np.ndarray  # when each label was fed back (seconds since the epoch)

    def __len__(self) -> int:
        return len(self.y)

    def part(self, chosen: np.ndarray) -> LabelledSamples:
        return LabelledSamples(self.x[chosen], self.y[chosen], self.times[chosen])


def labelled_samples(
    payload_dir: Path, model_name: str, version: str, since: float = 0.0
) -> LabelledSamples:
    """Every logged answer of the version that got a label at or after `since`: the
    answer's input with the fed-back label (the last one, if a sample got several)."""
    answers: dict[tuple[str, int], list] = {}
    labels: dict[tuple[str, int], tuple[object, float]] = {}
    for record in read_payloads(payload_dir, model_name, version):
        key = (record.get("request_id"), record.get("index", 0))
        if record.get("kind") == "prediction" and "input" in record:
            answers[key] = record["input"]
        elif record.get("kind") == "feedback" and record.get("time", 0) >= since:
            labels[key] = (record["label"], record["time"])
    joined = sorted(((labels[k][1], answers[k], labels[k][0]) for k in labels if k in answers),
                    key=lambda item: item[0])  # fmt: skip
    if not joined:
        return LabelledSamples(np.empty((0,)), np.empty((0,)), np.empty((0,)))
    times, x, y = zip(*joined, strict=True)
    return LabelledSamples(np.asarray(x, dtype=np.float32), np.asarray(y), np.asarray(times))


def split_window(
    samples: LabelledSamples, window_share: float, min_window: int
) -> tuple[LabelledSamples, LabelledSamples | None]:
    """(for training, the recent window): the newest `window_share` of the samples, when
    that is at least `min_window` of them; else all for training and no window."""
    size = int(len(samples) * window_share)
    if size < min_window:
        return samples, None
    order = np.arange(len(samples))
    return samples.part(order[:-size]), samples.part(order[-size:])
