"""Stop gloo's receive thread from starving the training step on CPU.

Gloo's TCP transport gives each process a `gloo_tcp_loop` thread. When a peer's gradients
arrive before this process has posted its own receive, that thread busy-polls the socket
until it has: on a machine with as many cores as processes it takes a core from the very
compute it waits for, and the scheduler lets the other threads back only at its next slice.
On a 2-vCPU VM this made 30% of 78 KB all-reduces take 2.5-8 ms instead of 0.5 ms.

Running that thread under `SCHED_IDLE` gives it only otherwise idle CPU time, which is all
it needs: the moment the step waits for the all-reduce, the core is idle. On a machine
shared with other CPU-bound jobs that could delay receives; drop the callback there with
`~callbacks.gloo_polling_priority`.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info

LOOP_THREAD_NAME = "gloo_tcp_loop"


def deprioritize_gloo_polling() -> int:
    """Put this process's gloo receive threads under SCHED_IDLE; returns how many it moved
    (0 when they already are: `setup` runs again for the test stage)."""
    if not hasattr(os, "SCHED_IDLE"):  # not Linux: the scheduler class does not exist
        return 0
    changed = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().strip() != LOOP_THREAD_NAME:
                continue
            if os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE:
                continue
            os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the thread ended meanwhile, or the OS refuses: keep the default
        changed += 1
    return changed


class GlooPollingPriority(L.Callback):
    """Applies `deprioritize_gloo_polling` once the process group exists; with one process,
    or the NCCL backend (GPUs), there is no gloo thread and this does nothing."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_backend() != dist.Backend.GLOO:
            return
        changed = deprioritize_gloo_polling()
        if changed:
            rank_zero_info(f"gloo: {changed} receive thread(s) per process set to SCHED_IDLE")
