"""Benchmark: how long a user waits. `make serve` until /readyz answers 200, and a whole
`make train` of the default config (interpreter start, imports, training, test, logging,
registration, gate; the data is already prepared, as for every `make train` but the first).

    python -m bench.cold_start        # writes the "Cold start" section of docs/benchmarks.md

Both run the real make targets against throwaway stores (MLflow, BentoML, outputs), so the
project's own registry and model store are untouched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.report import REPORT, ROOT, markdown_table, publish
from tests.servers import free_port, running_server


def make_train_seconds(workdir: Path) -> tuple[float, str]:
    args = (
        f"logger.tracking_uri=sqlite:///{workdir / 'mlflow.db'} "
        f"paths.log_dir={workdir / 'logs'} paths.mlflow_artifacts_dir={workdir / 'art'} "
        f"paths.bentoml_home={workdir / 'bentoml'} paths.bento_build_dir={workdir / 'build'} "
        f"paths.payload_dir={workdir / 'payloads'}"
    )
    start = time.perf_counter()
    job = subprocess.run(
        ["make", "-s", "train", f"ARGS={args} ~callbacks.rich_progress_bar"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if job.returncode != 0:
        raise RuntimeError(f"make train failed:\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")
    return seconds, args


def deploy_last_version(workdir: Path, args: str) -> None:
    job = subprocess.run(
        ["make", "-s", "deploy", "MODEL=digits-cnn", "VERSION=1", f"ARGS={args}"],
        cwd=ROOT, capture_output=True, text=True,
        env={
            **os.environ,
            "BENTOML_HOME": str(workdir / "bentoml"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",  # the CLI reads it first
        },
    )  # fmt: skip
    if job.returncode != 0:
        raise RuntimeError(f"make deploy failed:\n{job.stdout[-2000:]}\n{job.stderr[-2000:]}")


def make_serve_seconds(workdir: Path) -> float:
    port = free_port()
    command = [
        "make", "-s", "serve", f"SERVE_PORT={port}", f"BENTOML_STORE={workdir / 'bentoml'}",
        f"BENTO_BUILD_DIR={workdir / 'build'}",
    ]  # fmt: skip
    start = time.perf_counter()
    with running_server(
        command, f"http://127.0.0.1:{port}/readyz", workdir / "serve.log", cwd=ROOT
    ):
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    train_runs, serve_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for _ in range(args.repeats):
            seconds, overrides = make_train_seconds(workdir)
            train_runs.append(seconds)
        deploy_last_version(workdir, overrides)
        serve_runs = [make_serve_seconds(workdir) for _ in range(args.repeats)]
    table = markdown_table(
        ["what", "median", "runs"],
        [
            [what, f"{statistics.median(runs):.1f} s", ", ".join(f"{s:.1f}" for s in runs)]
            for what, runs in (
                ("`make serve` until `/readyz` is 200", serve_runs),
                ("`make train` (default config, CNN)", train_runs),
            )
        ],
    )
    method = (
        "Wall time from starting the make target; `make train` without the progress "
        "bar, against a throwaway MLflow store (the first run creates its schema)."
    )
    publish("cold_start", method, table, args.output)


if __name__ == "__main__":
    main()
