"""DDP without a buffer broadcast in every training step.

PyTorch's `DistributedDataParallel` copies rank zero's buffers (BatchNorm's running mean,
variance and batch count) to every rank before each forward pass. In training mode
BatchNorm normalizes with the batch's own statistics and only updates the running ones, so
those copies are read by nobody until an evaluation. Rank zero never receives anything from
the broadcast either: its buffers, the ones checkpointed and registered, are the same with
or without it. What the broadcast does cost is one collective per step: on 2 CPU processes
(gloo) about 0.6 ms of a 5 ms step of the default CNN.

This strategy turns it off and copies rank zero's buffers once at the start of each
validation instead, so every rank evaluates the model rank zero saves. Test and predict
need nothing: they run outside `fit`, where Lightning syncs the module's state itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy

from mlops.quiet import silence_unactionable_messages


class EvalBufferSyncDDPStrategy(DDPStrategy):
    """`DDPStrategy` (every argument the same) with `forward_sync_buffers=False` (buffers are
    still synced once, when DDP wraps the model) and rank zero's buffers broadcast before
    each validation."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("forward_sync_buffers", False)
        super().__init__(**kwargs)

    def setup_environment(self) -> None:
        # Runs in every process; a spawned one (ddp_spawn presets) starts without the
        # parent's warning filters.
        silence_unactionable_messages()
        super().setup_environment()

    def on_validation_start(self) -> None:
        super().on_validation_start()
        self.broadcast_buffers_from_rank_zero()

    def broadcast_buffers_from_rank_zero(self) -> None:
        """In place, on every rank; one broadcast per buffer dtype, not one per buffer."""
        if self.world_size < 2 or not dist.is_initialized():
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = defaultdict(list)
        for buffer in self.lightning_module.buffers():
            by_dtype[buffer.dtype].append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([buffer.reshape(-1) for buffer in buffers])
            dist.broadcast(flat, src=0)
            sizes = [buffer.numel() for buffer in buffers]
            for buffer, values in zip(buffers, flat.split(sizes), strict=True):
                buffer.copy_(values.view_as(buffer))
