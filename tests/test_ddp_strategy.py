"""EvalBufferSyncDDPStrategy: BatchNorm buffers stay per rank while training (no broadcast
per step) and every rank validates with rank zero's."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import torchrun_stdout

# Run by torchrun, 2 ranks. Each rank trains on its own shard, so without a broadcast per
# step their running means drift apart; validation must see rank zero's on both.
JOB = """
import json
import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from mlops.distributed.strategy import EvalBufferSyncDDPStrategy


class Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
        self.seen = {"train": [], "validation": []}
        self.rank_zeros = None

    def running_means(self):
        # (world size, 8): every rank's running mean, gathered
        return self.all_gather(self.net[1].running_mean.clone())

    def remember_rank_zeros(self):
        # Module hooks run before the strategy's: this is rank zero's before any copy.
        self.rank_zeros = self.running_means()[0]

    def record(self, stage):
        means = self.running_means()
        if stage == "train":  # do the ranks hold the same buffers?
            self.seen[stage].append(bool(torch.equal(means[0], means[1])))
        else:  # do both hold rank zero's, as it was when validation started?
            self.seen[stage].append(all(torch.equal(m, self.rank_zeros) for m in means))

    def training_step(self, batch, batch_idx):
        # Inside DDP's forward, after a per-step broadcast would have run; the first step of
        # an epoch follows an evaluation (or DDP's initial sync), which made them equal.
        if batch_idx > 0:
            self.record("train")
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def on_validation_start(self):
        self.remember_rank_zeros()

    def validation_step(self, batch, batch_idx):
        self.record("validation")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


torch.manual_seed(0)
x = torch.randn(64, 4) * 3 + torch.arange(64.0)[:, None]
data = TensorDataset(x, torch.randint(0, 2, (64,)))
loader = DataLoader(data, batch_size=8)
probe = Probe()
trainer = L.Trainer(
    accelerator="cpu", devices=2, strategy=EvalBufferSyncDDPStrategy(), max_epochs=2,
    logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0,
)
trainer.fit(probe, loader, loader)
if trainer.is_global_zero:
    print("SEEN " + json.dumps(probe.seen))
"""


def test_buffers_are_per_rank_in_training_and_rank_zeros_in_evaluation(tmp_path: Path) -> None:
    seen = json.loads(torchrun_stdout(tmp_path, JOB, "SEEN "))
    assert not any(seen["train"]), "ranks' buffers were made equal during training"
    assert seen["validation"] and all(seen["validation"])
