"""Benchmark: the GPU trainer configs (`trainer=gpu`, its bf16 variant, `trainer=ddp` on
every visible GPU), run for real where torch sees a CUDA GPU.

    python -m bench gpu_configs    # writes the "GPU and multi-GPU" section of docs/benchmarks.md

Each job is `pipelines/train.py` as `make train` starts it, the default config of each model
against a throwaway store: it trains, tests, registers and runs the promotion gate. A row
gives the job's own figures: `train/samples_per_sec` (median of epochs 2..N), test accuracy,
epochs, the job's wall time, and how many MLflow runs and model versions it made (one each,
whatever the process count). Without a CUDA GPU it says so and writes nothing. To run it on
a GPU box without a package index, see bench/offline_gpu.sh.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mlflow import MlflowClient

from bench.report import REPORT, ROOT, markdown_table, publish, steady_samples_per_sec
from mlops.data.builtin import write_digits

MODELS = ("cnn", "mlp", "rnn")
JOB_TIMEOUT_S = 300


def trainers(gpus: int) -> dict[str, list[str]]:
    return {
        "gpu": ["trainer=gpu"],
        "gpu, bf16-mixed": ["trainer=gpu", "trainer.precision=bf16-mixed"],
        f"ddp, {gpus} GPU{'s' if gpus > 1 else ''}": ["trainer=ddp", f"trainer.devices={gpus}"],
    }


def run_job(model: str, trainer: list[str], data: Path, workdir: Path) -> list[str]:
    """One `make train`-style job in its own store; the row of what it did."""
    store = workdir / f"{model}-{time.monotonic_ns()}"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    command = [
        sys.executable, str(ROOT / "pipelines" / "train.py"), f"model={model}", *trainer,
        f"data.path={data}", f"logger.tracking_uri={uri}", f"paths.log_dir={store / 'logs'}",
        f"paths.mlflow_artifacts_dir={store / 'mlartifacts'}",
        "~callbacks.rich_progress_bar", "+trainer.enable_progress_bar=false",
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        job = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:  # a hung job (NCCL, say) must not eat the others' time
        return [f"timed out after {JOB_TIMEOUT_S} s", "", "", "", ""]
    seconds = time.perf_counter() - start
    if job.returncode != 0:  # the row says so and the log keeps why; the other jobs still run
        print(f"{' '.join(command[1:])} failed:\n{job.stderr[-3000:]}", flush=True)
        last = (job.stderr.strip().splitlines() or ["no output"])[-1][:120].replace("|", "/")
        return [f"failed (exit {job.returncode}): {last}", "", "", f"{seconds:.1f} s", ""]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits").experiment_id
    # the training's own runs: the gate's evaluation runs are nested in it
    runs = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    versions = client.search_model_versions(f"name = 'digits-{model}'")
    counts = f"{len(runs)} / {len(versions)}"
    if len(runs) != 1:  # one run per job is the requirement: the row says it was broken
        return ["n/a", "n/a", "n/a", f"{seconds:.1f} s", counts]
    run_id = runs[0].info.run_id
    return [
        f"{steady_samples_per_sec(client, run_id):,.0f}",
        f"{runs[0].data.metrics['test/acc']:.4f}",
        str(len(client.get_metric_history(run_id, "val/acc"))),
        f"{seconds:.1f} s",
        counts,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA GPU here: nothing to measure")
        return
    gpus = torch.cuda.device_count()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        data = write_digits(Path(workdir) / "data")
        for model in MODELS:
            for label, trainer in trainers(gpus).items():
                rows.append([model, label, *run_job(model, trainer, data, Path(workdir))])
                print(" | ".join(rows[-1]), flush=True)
    header = ["model", "trainer", "samples/s", "test acc", "epochs", "job wall time",
              "runs / versions"]  # fmt: skip
    names = sorted({torch.cuda.get_device_name(i) for i in range(gpus)})
    method = (
        f"{gpus} x {', '.join(names)} (CUDA {torch.version.cuda}), "
        f"{os.cpu_count()} CPU cores. Each job is `pipelines/train.py` with the model's default "
        'config and the trainer named, as `make train ARGS="model=... trainer=..."` runs it '
        "(batch 64, early stopping, test, registration, promotion gate), against its own "
        "throwaway store. samples/s: the run's `train/samples_per_sec`, median of epochs "
        "2..N; epochs: validation epochs run; runs / versions: what the job left in its store."
    )
    publish("gpu_configs", method, markdown_table(header, rows), args.output)


if __name__ == "__main__":
    main()
