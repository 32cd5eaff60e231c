"""Benchmark: test accuracy and wall time of each default model config on digits.

    make bench            # writes the "Training" section of docs/benchmarks.md

Runs the real pipeline (fit, test, MLflow logging, registration) against a throwaway sqlite
store, so the user's registry gets no benchmark versions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.report import REPORT, ROOT, markdown_table, met, publish
from mlops.config import compose_config
from pipelines.train import train

TARGETS = {"mlp": 0.95, "cnn": 0.97, "rnn": 0.95}
TIME_LIMIT_S = 60.0


def run_once(model: str, workdir: Path) -> tuple[float, float, int]:
    cfg = compose_config(
        ROOT / "conf",
        [
            f"model={model}",
            f"paths.output_dir={workdir / f'{model}-{time.monotonic_ns()}'}",
            f"paths.mlflow_artifacts_dir={workdir / 'mlartifacts'}",
            f"logger.tracking_uri=sqlite:///{workdir / 'bench.db'}",
            "~callbacks.rich_progress_bar",
            "+trainer.enable_progress_bar=false",
        ],
    )
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    return result.metrics["test/acc"], seconds, result.epochs


def table(rows: list[tuple[str, float, float, int, int]]) -> str:
    header = ["model", "test acc", "target", "wall time (median)", "limit", "epochs", "runs",
              "meets both"]  # fmt: skip
    return markdown_table(
        header,
        [
            [
                model,
                f"{acc:.4f}",
                f">= {TARGETS[model]}",
                f"{seconds:.1f} s",
                f"<= {TIME_LIMIT_S:.0f} s",
                str(epochs),
                str(runs),
                met(acc >= TARGETS[model] and seconds <= TIME_LIMIT_S),
            ]
            for model, acc, seconds, epochs, runs in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in TARGETS:
            runs = [run_once(model, Path(workdir)) for _ in range(args.repeats)]
            accuracies = {acc for acc, _, _ in runs}
            assert len(accuracies) == 1, f"{model}: runs disagree on accuracy {accuracies}"
            rows.append(
                (model, runs[0][0], statistics.median(s for _, s, _ in runs), runs[0][2], len(runs))
            )
    method = (
        "Default configs, digits test split (270 images); wall time is the whole pipeline "
        "in-process: data, fit, test, MLflow logging and registration."
    )
    publish("train_accuracy", method, table(rows), args.output)


if __name__ == "__main__":
    main()
