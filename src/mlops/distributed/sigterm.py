"""Stop a DDP job on SIGTERM without hanging it.

Lightning 2.6 answers SIGTERM with a broadcast from inside the signal handler (Lightning
#20806). A collective started wherever the signal happens to land pairs with whatever
collective the other ranks are in: when every process is signalled (SLURM at a time limit
or preemption, torchrun's agent, `kill -- -<process group>`) the job hangs until it is
killed, and the MLflow run is left RUNNING (seen here under SLURM's variables, 2 ranks,
at an epoch's end).

Here Lightning's handler only notes the signal, and forwards it to the processes Lightning
started, as Lightning's does. At the end of every training epoch, once `last.ckpt` is
written, one all-reduce tells every rank whether any was signalled, and they all stop
there together through Lightning's own stop: exit status 143, the run marked failed, the
resume hint, and nothing lost that `last.ckpt` does not hold. A signal during the test
stage stops the job after it, before registration. With one process Lightning's handler
is kept: it stops at the next step.

That epoch-end all-reduce also makes Lightning's own per-step collective redundant: before
every training step Lightning 2.6 broadcasts rank zero's `received_sigterm` (Lightning
#21487), which only this callback sets, and only at an epoch's end, where Lightning stops
the fit before the next step. That broadcast is left out: 0.6 ms of a 5 ms step of the
default CNN on 2 gloo processes (docs/benchmarks.md, DDP scaling).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

STOP_POINTS = {"fit": "at the end of this epoch", "test": "after the test, before registration"}


def skip_sigterm_broadcast() -> None:
    """Stands in for Lightning's per-step `_broadcast_sigterm_tensor` (see above)."""


class StopTogetherOnSigterm(L.Callback):
    def __init__(self) -> None:
        self.signalled = False
        self.trainer: L.Trainer | None = None
        self.stop_point = ""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning builds its SIGTERM handler from this method when the stage starts, after
        # `setup`: replacing the method (not the handler, once the stage runs) leaves no
        # moment in which a signal reaches the broadcasting one.
        if trainer.world_size > 1 and stage in STOP_POINTS:
            self.trainer, self.stop_point = trainer, STOP_POINTS[stage]
            trainer._signal_connector._sigterm_notifier_fn = self.note_sigterm
            if stage == "fit":
                trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = skip_sigterm_broadcast

    def note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        assert self.trainer is not None  # installed by `setup`, which sets it
        if not self.signalled:
            rank_zero_info(f"SIGTERM: stopping every process {self.stop_point}")
            launcher = self.trainer.strategy.launcher
            if launcher is not None:  # the processes Lightning started, when it did
                launcher.kill(signum)
            if isinstance(launcher, _MultiProcessingLauncher):
                tell_the_spawning_process(signum)
        self.signalled = True

    def any_rank_signalled(self, trainer: L.Trainer) -> bool:
        flag = torch.tensor([int(self.signalled)], device=trainer.strategy.root_device)
        dist.all_reduce(flag)
        return bool(flag.item())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning checks this flag after every callback's epoch end (so after last.ckpt),
        # on every rank at once now, and stops the fit with SIGTERMException.
        if trainer.world_size > 1 and self.any_rank_signalled(trainer):
            trainer._signal_connector.received_sigterm = True

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and self.any_rank_signalled(trainer):
            raise SIGTERMException


def tell_the_spawning_process(signum: int) -> None:
    """In a ddp_spawn worker signalled on its own (`kill <worker pid>`, an OOM guard): the
    job's process would wait forever for the results the stopped workers do not send, so
    it gets the signal too, and stops as when it is signalled itself
    (`spawned_workers_stop_together`). Not when that process is gone: no stranger is
    signalled."""
    parent = multiprocessing.parent_process()
    if parent is not None and parent.is_alive() and parent.pid is not None:
        os.kill(parent.pid, signum)


@contextmanager
def spawned_workers_stop_together(trainer: L.Trainer) -> Iterator[None]:
    """Around `fit` and `test` in a ddp_spawn job's own process, which only waits for the
    workers it starts. Lightning gives that process no SIGTERM handler: a SIGTERM killed it
    at once, the workers went on as orphans, and the run was left RUNNING or, once they
    finished, FINISHED with no model version (seen here). Here the signal is passed on to
    the workers, which stop together at the end of the epoch (`StopTogetherOnSigterm`);
    this process leaves Lightning's wait for their results (stopped workers send none: it
    would wait forever), waits for them to exit, and stops as they did. Other launchers
    run the training in this process: nothing to do."""
    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _MultiProcessingLauncher):
        yield
        return

    stopping = False

    def pass_on(signum: int, frame: FrameType | None) -> None:
        # once: a worker signalled on its own signals this process too, and one passed on
        # from here comes back the same way; a second exception would skip the wait below
        nonlocal stopping
        if stopping:
            return
        stopping = True
        launcher.kill(signum)  # a signal to the whole group reaches them twice: harmless
        raise SIGTERMException

    previous = signal.signal(signal.SIGTERM, pass_on)
    try:
        yield
    except SIGTERMException:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one changes nothing now
        for process in launcher.procs:
            process.join()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
