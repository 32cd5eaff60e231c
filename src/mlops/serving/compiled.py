"""The registered graph compiled ahead of time for the service (PyTorch's AOTInductor).

The exported graph runs one Python call per operation; compiled, the whole forward pass is
one call into native code, which still hands each convolution to ATen (oneDNN for more than
one sample, a fixed ~30 us a convolution here: a batch of 2 takes 3x one sample's 41 us).
Digits CNN, one thread, in-process: 100 -> 57 us for one sample, 250 -> 183 us for 6,
820 -> 540 us for 64; the served Bento answered 23% more 64-sample and 14% more
single-sample requests a second (docs/benchmarks.md).

Compiled code is native code for the CPU it was built on (`-march=native`): the Bento
records that CPU's instruction-set flags, and a worker on a CPU that lacks any of them
serves the exported graph instead, which gives the same answers more slowly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch only where the work is: the service imports this module to start
    import torch

COMPILED_FILE = "forward.pt2"
CPU_INFO = Path("/proc/cpuinfo")
LOG = logging.getLogger("bentoml")  # what BentoML prints in the server's output


def cpu_flags() -> tuple[str, ...]:
    """This CPU's instruction-set extensions as the kernel lists them; none where there is
    no /proc/cpuinfo, so nothing is compiled there (nothing could be checked on load)."""
    if not CPU_INFO.exists():
        return ()
    for line in CPU_INFO.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return tuple(sorted(value.split()))
    return ()


def missing_cpu_flags(compiled_for: tuple[str, ...]) -> tuple[str, ...]:
    """What the CPU the code was compiled on had and this one lacks."""
    here = set(cpu_flags())
    return tuple(flag for flag in compiled_for if flag not in here)


def package_forward(path: Path) -> Callable:
    """The compiled forward pass through AOTInductor's package loader itself.
    `aoti_load_package` wraps that in a model that parses its input and output specs on
    every call (25 us of a 6-sample forward pass of 145 us, digits CNN) and imports
    `torch._inductor`, which imports `torch._dynamo`: 1 s of each worker's start. Only
    graphs of one tensor in and one out are compiled (`lifted_forward`), so the specs say
    nothing the call needs."""
    import torch

    with unpacked_in_own_folder():
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return loader.boxed_run([x])[0]

    return forward


@contextlib.contextmanager
def unpacked_in_own_folder() -> Iterator[None]:
    """AOTInductor unpacks a package into `$TMPDIR/aotinductor_*` and removes that only
    when its loader is destroyed, which a worker stopped by its server never is: every
    worker start left 1.9 MB (the digits CNN) in /tmp for good. Here it unpacks into a
    folder of our own, removed as soon as the loader has mapped the code and weights."""
    previous = os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="mlops-aoti-") as folder:
        os.environ["TMPDIR"] = folder
        try:
            yield
        finally:
            if previous is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = previous


def compile_forward(
    program: torch.export.ExportedProgram,
    target: Path,
    examples: np.ndarray,
    batch_sizes: tuple[int, ...],
) -> tuple[str, ...] | str:
    """Compile `program` into `target` and check what the workers will run against the
    graph at each batch size (the examples repeated): this CPU's flags, or why it was not
    compiled."""
    import torch

    from mlops.errors import first_line
    from mlops.models.inference import outputs_problem

    flags = cpu_flags()
    if not flags or platform.machine() != "x86_64":
        return (
            "only x86-64 Linux is compiled for, where a CPU's flags can be checked on load; "
            f"this is {platform.system()} {platform.machine()}"
        )
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(target))
        compiled = package_forward(target)
    except Exception as error:  # a missing C++ compiler, an operation inductor lacks, ...
        target.unlink(missing_ok=True)
        return f"AOTInductor could not compile it ({first_line(error)})"
    batches = [np.resize(examples, (size, *examples.shape[1:])) for size in batch_sizes]
    problem = outputs_problem(program.module(), compiled, batches, "compiled graph")
    if problem:
        target.unlink()
        return problem
    return flags


def load_compiled_forward(path: Path, compiled_for: tuple[str, ...]) -> Callable | None:
    """The compiled forward pass (`package_forward`), or None where this CPU lacks an
    instruction it may use or it does not load (a system library older than the one it
    was built against): then the service runs the exported graph, and the server's log
    says why."""
    from mlops.errors import first_line

    missing = missing_cpu_flags(compiled_for)
    if missing:
        LOG.warning(
            "this CPU lacks %s, which the Bento's compiled forward pass may use: serving the "
            "exported graph (same answers, slower); deploy on this machine to compile for it",
            ", ".join(missing[:8]),
        )
        return None
    try:
        return package_forward(path)
    except Exception as error:  # torch raises RuntimeError, OSError, zipfile errors, ...
        LOG.warning(
            "the Bento's compiled forward pass does not load here (%s): serving the exported "
            "graph (same answers, slower)",
            first_line(error),
        )
        return None
