"""The one LightningModule: wraps any network with loss, metrics and optimization."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import nn
from torchmetrics import MaxMetric

from mlops.models.scores import ClassificationScores

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


STAGES = ("train", "val", "test")

# Lightning sets this attribute before and after every hook it calls, about 45 times a
# training step; nn.Module.__setattr__ first checks each value against the module's
# parameters, submodules and buffers (1.2 us a call here, against 0.1 us for a plain
# attribute): about 50 us of a 1.5 ms MLP step. A hook's name is never any of those.
HOOK_NAME_ATTRIBUTE = "_current_fx_name"

# Every value this module logs comes from a torchmetrics `compute()`, already reduced over
# DDP ranks (and `train/samples_per_sec` is rank zero's by design). `sync_dist=True` would
# reduce each again, a barrier and an all-reduce per value per epoch: 280 collectives,
# about 90 ms, in a 10-epoch 2-process CPU job (measured). So Lightning's reminder to use
# it is silenced, for these keys only.
UNSYNCED_EPOCH_METRIC_WARNING = r"It is recommended to use `self\.log\('(train|val|test)/"
warnings.filterwarnings(
    "ignore", message=UNSYNCED_EPOCH_METRIC_WARNING, category=PossibleUserWarning
)


class Classifier(L.LightningModule):
    """Cross-entropy classifier with loss, accuracy and F1 per stage (`train/acc`, `val/f1`,
    ...), `val/acc_best`, and the test confusion matrix as a plot of the MLflow run.

    Steps only update one `ClassificationScores` state per stage; each stage logs once, at
    its epoch end. A `self.log` call costs Lightning about a millisecond (it walks its whole
    result collection), which per step would be a fifth of a small model's training time.
    torchmetrics reduces the states over DDP ranks when it computes.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss = nn.CrossEntropyLoss()
        for stage in STAGES:  # train_scores, val_scores, test_scores
            setattr(self, f"{stage}_scores", ClassificationScores(num_classes))
        self.val_acc_best = MaxMetric()

    def __setattr__(self, name: str, value) -> None:
        if name == HOOK_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits, y)
        getattr(self, f"{stage}_scores").update(logits, y, loss)
        return loss

    def _log_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        """Compute (reduced over ranks), log once, and reset the stage's scores."""
        scores = getattr(self, f"{stage}_scores")
        values = scores.compute()
        scores.reset()
        if not self.trainer.sanity_checking:
            # Already equal on every rank: no sync_dist (see UNSYNCED_EPOCH_METRIC_WARNING).
            self.log_dict({f"{stage}/{name}": values[name] for name in ("loss", "acc", "f1")})
        return values

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(values["acc"])
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_epoch_end(self) -> None:
        confusion = self._log_epoch("test")["confusion"]  # reduced over ranks: all of it
        # plotted by the process that tested: under ddp_spawn that is a worker, and Lightning
        # hands the job's first process the metrics and the fitted weights, nothing else
        if self.trainer.is_global_zero and isinstance(self.logger, MLFlowLogger):
            from mlops.tracking.run import log_confusion_matrix

            classes = getattr(self.trainer.datamodule, "classes", ())
            log_confusion_matrix(self.logger, confusion.cpu(), classes)

    def configure_optimizers(self):
        return optimizers_config(self, self.optimizer_factory, self.scheduler_factory)


def optimizers_config(
    module: nn.Module,
    optimizer_factory: OptimizerFactory,
    scheduler_factory: SchedulerFactory | None,
):
    """`configure_optimizers`' answer: the optimizer over the module's parameters, and the
    scheduler stepped once per epoch when there is one."""
    optimizer = optimizer_factory(params=module.parameters())
    if scheduler_factory is None:
        return optimizer
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler_factory(optimizer), "interval": "epoch"},
    }
