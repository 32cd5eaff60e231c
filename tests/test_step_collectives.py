"""A DDP training step waits on no collective but DDP's own gradient all-reduce: with the
DDP presets' strategy and `stop_together_on_sigterm`, neither Lightning's per-step SIGTERM
broadcast nor a buffer broadcast is left (each one a sync point of every step)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import torchrun_stdout

# Run by torchrun, 2 ranks. The gradient all-reduce runs in DDP's C++ reducer; every
# collective Lightning or this project starts goes through `torch.distributed`'s Python
# functions, counted here from one step's end to the next one's.
JOB = """
import json
import lightning as L
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from mlops.distributed.sigterm import StopTogetherOnSigterm
from mlops.distributed.strategy import EvalBufferSyncDDPStrategy

COLLECTIVES = ("broadcast", "all_reduce", "all_gather", "barrier", "reduce", "gather",
               "scatter", "broadcast_object_list", "all_gather_object")
calls = []
for name in COLLECTIVES:
    def counted(*args, _name=name, _original=getattr(dist, name), **kwargs):
        calls.append(_name)
        return _original(*args, **kwargs)
    setattr(dist, name, counted)


class StepCollectives(L.Callback):
    def __init__(self):
        self.per_step = []
        self.mark = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx > 0:  # the first step of an epoch follows the epoch's start
            self.per_step.append(calls[self.mark:])
        self.mark = len(calls)


class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
loader = DataLoader(data, batch_size=8)
probe = StepCollectives()
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy=EvalBufferSyncDDPStrategy(), max_epochs=2,
    callbacks=[StopTogetherOnSigterm(), probe], logger=False, enable_checkpointing=False,
    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
)
trainer.fit(Net(), loader, loader)
if trainer.is_global_zero:
    print("STEPS " + json.dumps(probe.per_step))
"""


def test_a_ddp_training_step_starts_no_collective_of_its_own(tmp_path: Path) -> None:
    steps = json.loads(torchrun_stdout(tmp_path, JOB, "STEPS "))
    assert len(steps) == 2 * 3  # 2 epochs of 4 steps per rank, the first of each not counted
    assert all(step == [] for step in steps), steps
