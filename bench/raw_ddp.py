"""The reference for the DDP benchmark: plain PyTorch DDP, written the textbook way, on
the same network, data split and per-process batch as the pipeline (no Lightning, no
MLflow, no mlops callbacks). Prints one JSON line: samples/s of all ranks.

    python bench/raw_ddp.py BATCH CHANNELS EPOCHS        # 1 process, e.g. 64 32,64 15
    torchrun --standalone --nproc_per_node=2 bench/raw_ddp.py 64 32,64 15   # 2, gloo
"""

from __future__ import annotations

import json
import os
import statistics
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from bench.raw_loop import textbook_epoch
from bench.report import ROOT
from mlops.data.files import FilesDataModule
from mlops.models.cnn import CNN


def epoch_rates(
    batch_size: int, channels: tuple[int, ...], epochs: int, distributed: bool
) -> list[float]:
    """Samples/s of each epoch. The DDP wrapper must be gone before the process group is
    destroyed: freeing it afterwards runs gloo's destructor under the GIL, which deadlocks."""
    world_size = dist.get_world_size() if distributed else 1
    torch.manual_seed(0)
    splits = FilesDataModule("digits", ROOT / "data" / "digits" / "digits.npz").splits
    dataset = TensorDataset(torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train))
    sampler = DistributedSampler(dataset) if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler)
    net = CNN(splits.x_train.shape[1:], int(splits.y_train.max()) + 1, channels=channels)
    model = DistributedDataParallel(net) if distributed else net
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        rates.append(textbook_epoch(model, loader, optimizer, loss_fn) * world_size)
    return rates


def main(batch_size: int, channels: tuple[int, ...], epochs: int) -> None:
    distributed = "WORLD_SIZE" in os.environ  # started by torchrun
    if distributed:
        dist.init_process_group("gloo")
    rates = epoch_rates(batch_size, channels, epochs, distributed)
    if not distributed or dist.get_rank() == 0:
        print(json.dumps({"samples_per_sec": statistics.median(rates[1:])}), flush=True)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), tuple(int(c) for c in sys.argv[2].split(",")), int(sys.argv[3]))
