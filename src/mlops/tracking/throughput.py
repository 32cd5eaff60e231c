"""Training speed as a metric, so every run in MLflow says how fast it trained."""

from __future__ import annotations

import time
from typing import Any

import lightning as L


class TrainingThroughput(L.Callback):
    """Logs `train/samples_per_sec` once per epoch: samples of all DDP ranks divided by the
    time from the epoch's start to its last training batch (validation excluded, data
    loading and every training hook included).

    Lightning's `ThroughputMonitor` reports a rolling per-step window; a per-epoch figure
    lines up with the other per-epoch metrics and is what the benchmarks compare.
    """

    def __init__(self) -> None:
        self._epoch_start = 0.0
        self._last_batch_end = 0.0
        self._samples = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples = 0
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._samples += len(batch[1])
        self._last_batch_end = time.perf_counter()

    def epoch_rate(self, trainer: L.Trainer) -> float | None:
        """The job's training samples/s over the epoch that just ended."""
        seconds = self._last_batch_end - self._epoch_start
        if self._samples == 0 or seconds <= 0:
            return None
        # Every rank steps in lockstep over equally sized shards: rank zero's time is the
        # job's time, its sample count times world size is the job's samples.
        return self._samples * trainer.world_size / seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rate = self.epoch_rate(trainer)
        if rate is not None:
            pl_module.log("train/samples_per_sec", rate, on_epoch=True, rank_zero_only=True)
