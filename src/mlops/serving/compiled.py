"""The registered graph compiled ahead of time for the service (PyTorch's AOTInductor).

The exported graph runs one Python call per operation, and oneDNN re-packs each
convolution's weights on every call; compiled, the whole forward pass is one call into
native code with the weights packed once. Digits CNN, one thread, in-process: 100 -> 57 us
for one sample, 250 -> 183 us for 6, 820 -> 540 us for 64; the served Bento answered 23%
more 64-sample and 14% more single-sample requests a second (docs/benchmarks.md).

Compiled code is native code for the CPU it was built on (`-march=native`): the Bento
records that CPU's instruction-set flags, and a worker on a CPU that lacks any of them
serves the exported graph instead, which gives the same answers more slowly.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable
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


def compile_forward(
    program: torch.export.ExportedProgram,
    target: Path,
    examples: np.ndarray,
    batch_sizes: tuple[int, ...],
) -> tuple[str, ...] | str:
    """Compile `program` into `target` and check it against the graph at each batch size
    (the examples repeated): this CPU's flags, or why it was not compiled."""
    import torch

    flags = cpu_flags()
    if not flags or platform.machine() not in ("x86_64", "AMD64"):
        return (
            "only x86-64 Linux is compiled for, where a CPU's flags can be checked on load; "
            f"this is {platform.system()} {platform.machine()}"
        )
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(target))
        compiled = torch._inductor.aoti_load_package(str(target))
    except Exception as error:  # a missing C++ compiler, an operation inductor lacks, ...
        target.unlink(missing_ok=True)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"AOTInductor could not compile it ({type(error).__name__}: {first[:200]})"
    graph = program.module()
    for size in batch_sizes:
        batch = torch.from_numpy(np.resize(examples, (size, *examples.shape[1:])))
        with torch.inference_mode():
            expected = graph(batch)
            try:
                got = compiled(batch)
            except Exception as error:  # a batch size the compiled code does not take
                target.unlink()
                return f"the compiled graph refuses a batch of {size} ({type(error).__name__})"
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-6):
            target.unlink()
            gap = float((got - expected).abs().max())
            return f"the compiled graph is off by up to {gap:.2g} at a batch of {size}"
    return flags


def load_compiled_forward(path: Path, compiled_for: tuple[str, ...]) -> Callable | None:
    """The compiled forward pass, or None where this CPU lacks an instruction it may use or
    it does not load (a system library older than the one it was built against): then the
    service runs the exported graph, and the server's log says why.

    It runs through AOTInductor's package loader itself. `aoti_load_package` wraps that in
    a model that parses its input and output specs on every call (25 us of a 6-sample
    forward pass of 145 us, digits CNN) and imports `torch._inductor`, which imports
    `torch._dynamo`: 1 s of each worker's start. Only graphs of one tensor in and one out
    are compiled (`lifted_forward`), so the specs say nothing the call needs."""
    import torch

    missing = missing_cpu_flags(compiled_for)
    if missing:
        LOG.warning(
            "this CPU lacks %s, which the Bento's compiled forward pass may use: serving the "
            "exported graph (same answers, slower); deploy on this machine to compile for it",
            ", ".join(missing[:8]),
        )
        return None
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    except Exception as error:  # torch raises RuntimeError, OSError, zipfile errors, ...
        LOG.warning(
            "the Bento's compiled forward pass does not load here (%s: %s): serving the "
            "exported graph (same answers, slower)",
            type(error).__name__,
            str(error).strip().splitlines()[0][:200] if str(error).strip() else "",
        )
        return None

    def forward(x: torch.Tensor) -> torch.Tensor:
        return loader.boxed_run([x])[0]

    return forward
