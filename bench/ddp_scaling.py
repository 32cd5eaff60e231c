"""Benchmark: training samples/s of the pipeline with 1 and with 2 CPU processes (DDP, gloo),
one torch thread each, same model, data and per-process batch size (the default CNN, and
two with 4x and 16x its compute per sample).

    python -m bench.ddp_scaling       # writes the "DDP scaling" section of docs/benchmarks.md

Each run is the real `pipelines/train.py` (as `make train` starts it) against a throwaway
store; the figure is the pipeline's own `train/samples_per_sec` metric (all ranks, validation
excluded), median over the epochs after the first. Interleaved with it, the same training
in plain PyTorch DDP (`bench/raw_ddp.py`) shows what this machine and gloo allow at all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from bench.report import REPORT, ROOT, markdown_table, met, publish, steady_samples_per_sec
from mlops.config import compose_config

TARGET = 1.7
EPOCHS = 15
TRAINERS = {1: ["trainer=cpu"], 2: ["trainer=ddp_cpu", "trainer.devices=2"]}


@dataclass(frozen=True)
class Case:
    """One row: a CNN (its conv channels) and a per-process batch size."""

    channels: tuple[int, ...]
    batch_size: int

    @property
    def label(self) -> str:
        default = self.channels == DEFAULT_CHANNELS
        return f"cnn {list(self.channels)}" + (" (default)" if default else "")


DEFAULT_CHANNELS = tuple(compose_config(ROOT / "conf", ["model=cnn"]).model.channels)
# The default CNN at two batch sizes, and wider ones (2x and 4x the channels: about 4x and
# 16x the compute per sample): DDP on CPU pays off as a step's compute grows against the
# fixed cost of its collectives.
CASES = (
    Case(DEFAULT_CHANNELS, 64),
    Case(DEFAULT_CHANNELS, 256),
    Case((64, 128), 256),
    Case((128, 256), 256),
)


def run_once(processes: int, case: Case, workdir: Path) -> float:
    """Samples/s of one training: median of epochs 2..N of the logged metric."""
    uri = f"sqlite:///{workdir / 'bench.db'}"
    command = [
        sys.executable,
        str(ROOT / "pipelines" / "train.py"),
        *TRAINERS[processes],
        "model=cnn",
        f"model.channels=[{','.join(map(str, case.channels))}]",
        f"data.batch_size={case.batch_size}",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.deterministic=false",
        "test=false",
        "register=false",
        "~callbacks.early_stopping",
        "~callbacks.rich_progress_bar",
        "+trainer.enable_progress_bar=false",
        f"logger.tracking_uri={uri}",
        f"paths.log_dir={workdir / 'logs'}",
        f"paths.mlflow_artifacts_dir={workdir / 'mlartifacts'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one torch thread per process
    job = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if job.returncode != 0:
        raise RuntimeError(f"training failed:\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
    client = MlflowClient(uri)
    run = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    return steady_samples_per_sec(client, run.info.run_id)


def run_raw_once(processes: int, case: Case) -> float:
    """Samples/s of the plain PyTorch DDP reference (median of its epochs 2..N)."""
    script = [
        str(ROOT / "bench" / "raw_ddp.py"),
        str(case.batch_size),
        ",".join(map(str, case.channels)),
        str(EPOCHS),
    ]
    launcher = [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    job = subprocess.run(
        [*launcher, *script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if job.returncode != 0:
        raise RuntimeError(f"raw DDP failed:\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
    return json.loads(job.stdout.strip().splitlines()[-1])["samples_per_sec"]


def paired_speed_up(rates: dict[int, list[float]]) -> float:
    """Median over repeats of the 2-process rate over the 1-process rate of the same repeat:
    a repeat runs within a minute or two, so this VM's slower drift cancels out."""
    return statistics.median(two / one for one, two in zip(rates[1], rates[2], strict=True))


def listed(rates: list[float]) -> str:
    return ", ".join(f"{r:,.0f}" for r in rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    rows = []
    runs_text = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in CASES:
            ours: dict[int, list[float]] = {1: [], 2: []}
            plain: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(args.repeats):  # interleaved, so drift hits all alike
                for processes in (1, 2):
                    ours[processes].append(run_once(processes, case, Path(workdir)))
                    plain[processes].append(run_raw_once(processes, case))
            one, two = (statistics.median(ours[p]) for p in (1, 2))
            plain_one, plain_two = (statistics.median(plain[p]) for p in (1, 2))
            speed_up, plain_speed_up = paired_speed_up(ours), paired_speed_up(plain)
            rows.append([
                case.label, str(case.batch_size), f"{one:,.0f}", f"{two:,.0f}",
                f"{speed_up:.2f}x", f">= {TARGET}x: {met(speed_up >= TARGET)}",
                f"{plain_one:,.0f}", f"{plain_two:,.0f}", f"{plain_speed_up:.2f}x",
            ])  # fmt: skip
            runs_text.append(
                f"{case.label}, batch {case.batch_size}: 1 process {listed(ours[1])}; "
                f"2 processes {listed(ours[2])}; plain DDP 1 process {listed(plain[1])}; "
                f"2 processes {listed(plain[2])}"
            )
    header = ["model", "batch per process", "1 process samples/s", "2 processes samples/s",
              "speed-up", "target", "plain DDP 1 process", "plain DDP 2 processes",
              "plain DDP speed-up"]  # fmt: skip
    table = markdown_table(header, rows)
    method = (
        "Digits, `trainer=cpu` (1 process) vs `trainer=ddp_cpu` (2 processes, gloo), one torch "
        f"thread per process (`OMP_NUM_THREADS=1`), {EPOCHS} epochs; samples/s is the run's "
        "`train/samples_per_sec` (all ranks, validation excluded), median of epochs "
        f"2..{EPOCHS}, then the median of {args.repeats} interleaved runs; speed-up: the median "
        "of each repeat's 2-process rate over its 1-process rate. Plain DDP: the same "
        "network, split and batch in a textbook PyTorch DDP loop (`bench/raw_ddp.py`, gloo, "
        "`torchrun`; no Lightning, no MLflow), run after each pipeline run, median of the "
        "same epochs and runs. The model column gives the CNN's conv channels. Per run: "
        + "; ".join(runs_text)
        + "."
    )
    publish("ddp_scaling", method, table, args.output)


if __name__ == "__main__":
    main()
