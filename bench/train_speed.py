"""Benchmark: the pipeline's steady-state training samples/s against a hand-written PyTorch
loop on the same network, data, optimizer, batch size and thread count.

    python -m bench.train_speed       # writes the "Training speed" section of docs/benchmarks.md

The pipeline runs in-process with its default callbacks (checkpointing, early stopping, LR
monitor, throughput), metrics and MLflow logging, minus the progress bar; its figure is its
own `train/samples_per_sec` metric. The raw loop runs as a twin inside the same job: after
each pipeline training epoch, one epoch of the textbook loop on a copy of the network. Each
pipeline epoch is compared with the raw epoch right after it, so the drift of a shared
machine (often +-20% within a minute here) hits both sides of every pair alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig

from bench.raw_loop import EpochRates, MinimalLightningModule, RawLoopTwin
from bench.report import REPORT, ROOT, markdown_table, met, publish
from mlops import training
from mlops.config import compose_config
from pipelines.train import train

TARGET = 0.97
EPOCHS = 20
TWIN = "bench.raw_loop.RawLoopTwin"
# name -> overrides. The default configs of the three families (batch 64), then steps
# about 20x and 70x heavier: Lightning's cost is a constant per step, so its share shrinks.
CASES = {
    "mlp": ["model=mlp"],
    "cnn": ["model=cnn"],
    "rnn": ["model=rnn"],
    "cnn [64, 128], batch 256": ["model=cnn", "model.channels=[64,128]", "data.batch_size=256"],
    "cnn [128, 256], batch 256": ["model=cnn", "model.channels=[128,256]", "data.batch_size=256"],
}


def config(case: list[str], workdir: Path) -> DictConfig:
    return compose_config(
        ROOT / "conf",
        [
            *case,
            f"trainer.max_epochs={EPOCHS}",
            "test=false",
            "register=false",
            "~callbacks.rich_progress_bar",
            "+trainer.enable_progress_bar=false",
            f"+callbacks.raw_loop_twin._target_={TWIN}",
            f"paths.output_dir={workdir / f'run-{time.monotonic_ns()}'}",
            f"paths.mlflow_artifacts_dir={workdir / 'mlartifacts'}",
            f"logger.tracking_uri=sqlite:///{workdir / 'bench.db'}",
        ],
    )


def paired_rates(cfg: DictConfig) -> list[tuple[float, float]]:
    """(pipeline, raw) samples/s per epoch, the first (warm-up) epoch left out."""
    result = train(cfg)
    history = MlflowClient(cfg.logger.tracking_uri).get_metric_history(
        result.run_id, "train/samples_per_sec"
    )
    pipeline = [m.value for m in sorted(history, key=lambda m: m.step)]
    return list(zip(pipeline, RawLoopTwin.latest.rates, strict=True))[1:]


def minimal_lightning_pairs(cfg: DictConfig) -> list[tuple[float, float]]:
    """(minimal LightningModule, raw) samples/s per epoch on the pipeline's network, data,
    optimizer and trainer flags, the first epoch left out."""
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = training.load_data(cfg)
    net = training.build_network(cfg, datamodule)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    module = MinimalLightningModule(net, instantiate(cfg.optimizer), scheduler)
    rates, twin = EpochRates(), RawLoopTwin()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=EPOCHS,
        deterministic=cfg.trainer.deterministic,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[rates, twin],
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `validation_step`")
        trainer.fit(module, datamodule=datamodule)
    return list(zip(rates.rates, twin.rates, strict=True))[1:]


def extra_ms_per_step(pairs: list[tuple[float, float]], batch_size: int) -> float:
    """Median over epochs of the time a step takes beyond the raw loop's step, in ms."""
    return statistics.median(1e3 * batch_size * (1 / slow - 1 / raw) for slow, raw in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.cases:
            pairs, minimal = [], []
            for _ in range(args.repeats):
                cfg = config(CASES[case], Path(workdir))
                pairs += paired_rates(cfg)
                minimal += minimal_lightning_pairs(cfg)
            paired = statistics.median(p / r for p, r in pairs)
            rows.append(
                [
                    case,
                    f"{statistics.median(p for p, _ in pairs):,.0f}",
                    f"{statistics.median(r for _, r in pairs):,.0f}",
                    f"{paired:.3f}x",
                    f">= {TARGET}x: {met(paired >= TARGET)}",
                    f"{statistics.median(m / r for m, r in minimal):.3f}x",
                    f"{extra_ms_per_step(pairs, cfg.data.batch_size):.2f} ms",
                    f"{extra_ms_per_step(minimal, cfg.data.batch_size):.2f} ms",
                ]
            )
    headers = [
        "model",
        "pipeline samples/s",
        "raw loop samples/s",
        "pipeline / raw",
        "target",
        "minimal LightningModule / raw",
        "pipeline's extra time per step",
        "minimal LightningModule's",
    ]
    method = (
        f"Digits, batch 64 unless named, {torch.get_num_threads()} torch threads, {EPOCHS} "
        f"epochs per run, {args.repeats} runs per model. Samples/s columns: medians over "
        "epochs 2..N of all runs; pipeline / raw: median over those epochs of each pipeline "
        "epoch's rate divided by the raw epoch that followed it. The minimal LightningModule "
        "runs the same training with loss only, no metrics, logging or validation "
        "(`bench/raw_loop.py`): Lightning's own cost. Extra time per step: a step's time "
        "(batch / samples/s) minus the raw loop's step time, median over the same pairs."
    )
    publish("train_speed", method, markdown_table(headers, rows), args.output)


if __name__ == "__main__":
    main()
