"""`make bench`: every benchmark, or the one named (`python -m bench serving`)."""

from __future__ import annotations

import importlib
import sys

from mlops.quiet import artifact_progress_bars_only_when_asked

BENCHMARKS = (
    "train_accuracy",
    "train_speed",
    "ddp_scaling",
    "serving",
    "monitoring",
    "soak",
    "compression",
    "cold_start",
    "gpu_configs",
    "team",
)


def main() -> None:
    chosen = [name for name in sys.argv[1:] if name != "all"] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown}; choose from {', '.join(BENCHMARKS)}")
    artifact_progress_bars_only_when_asked()
    for name in chosen:
        print(f"== bench.{name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        sys.argv = [f"bench.{name}"]  # each benchmark parses its own (default) arguments
        module.main()


if __name__ == "__main__":
    main()
