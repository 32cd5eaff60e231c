"""Forward latency, measured the same way for the parent's torch graph and its variants:
same process, same thread count, median of repeated calls after a warm-up."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def median_latency_ms(
    forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, repeats: int, warmup: int
) -> float:
    """Median wall time of one `forward(batch)`, in milliseconds."""
    for _ in range(warmup):
        forward(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
