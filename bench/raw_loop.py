"""The references the training-speed benchmark compares the pipeline with: a hand-written
PyTorch loop, run as a twin inside each job (a Lightning callback), and the smallest
LightningModule for the same training (what Lightning's own loop costs)."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlops.models.classifier import OptimizerFactory, SchedulerFactory, optimizers_config
from mlops.tracking.throughput import TrainingThroughput


def textbook_epoch(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
) -> float:
    """One epoch of the hand-written loop; returns this process's samples/s."""
    samples, start = 0, time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()
        samples += len(y)
    return samples / (time.perf_counter() - start)


class RawLoopTwin(L.Callback):
    """What a user would write by hand: the same network (a copy), optimizer and schedule,
    and the textbook `DataLoader(TensorDataset(...))` over the same training split; one
    epoch after each of the pipeline's, outside the pipeline's timed window."""

    latest: RawLoopTwin | None = None  # Hydra builds it inside the pipeline: find it here

    def __init__(self) -> None:
        self.rates: list[float] = []
        RawLoopTwin.latest = self

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.net = copy.deepcopy(pl_module.net)
        self.optimizer = pl_module.optimizer_factory(params=self.net.parameters())
        factory = pl_module.scheduler_factory
        self.scheduler = factory(self.optimizer) if factory else None
        datamodule = trainer.datamodule
        splits = datamodule.splits
        dataset = TensorDataset(torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train))
        self.loader = DataLoader(dataset, batch_size=datamodule.batch_size, shuffle=True)
        self.loss_fn = nn.CrossEntropyLoss()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.net.train()
        self.rates.append(textbook_epoch(self.net, self.loader, self.optimizer, self.loss_fn))
        if self.scheduler is not None:
            self.scheduler.step()


class MinimalLightningModule(L.LightningModule):
    """Loss only: no metrics, no logging, no validation. The gap between this and the raw
    loop is Lightning's per-step loop; the gap between the pipeline and this is mlops'."""

    def __init__(
        self,
        net: nn.Module,
        optimizer_factory: OptimizerFactory,
        scheduler_factory: SchedulerFactory | None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer_factory, scheduler_factory
        self.loss = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return self.loss(self.net(x), y)

    def configure_optimizers(self):
        return optimizers_config(self, self.optimizer_factory, self.scheduler_factory)


class EpochRates(TrainingThroughput):
    """The pipeline's own throughput measurement, kept per epoch instead of logged."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rates.append(self.epoch_rate(trainer))
