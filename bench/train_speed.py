"""Benchmark: the pipeline's steady-state training samples/s against a hand-written PyTorch
loop on the same network, data loader, optimizer, batch size and thread count.

    python -m bench.train_speed       # writes the "Training speed" section of docs/benchmarks.md

The pipeline runs in-process with its default callbacks (checkpointing, early stopping, LR
monitor, throughput), metrics and MLflow logging, minus the progress bar; its figure is its
own `train/samples_per_sec` metric. Both sides time the training batches of each epoch
(validation excluded) and report the median of the epochs after the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.report import REPORT, ROOT, markdown_table, met, ratio, stamp, write_section
from mlops import training
from mlops.config import compose_config
from pipelines.train import train

MODELS = ("mlp", "cnn", "rnn")
TARGET = 0.97
EPOCHS = 20


def config(model: str, workdir: Path) -> DictConfig:
    return compose_config(
        ROOT / "conf",
        [
            f"model={model}",
            f"trainer.max_epochs={EPOCHS}",
            "test=false",
            "register=false",
            "~callbacks.rich_progress_bar",
            "+trainer.enable_progress_bar=false",
            f"paths.output_dir={workdir / f'{model}-{time.monotonic_ns()}'}",
            f"paths.mlflow_artifacts_dir={workdir / 'mlartifacts'}",
            f"logger.tracking_uri=sqlite:///{workdir / 'bench.db'}",
        ],
    )


def pipeline_rate(cfg: DictConfig) -> float:
    result = train(cfg)
    history = MlflowClient(cfg.logger.tracking_uri).get_metric_history(
        result.run_id, "train/samples_per_sec"
    )
    return statistics.median(m.value for m in sorted(history, key=lambda m: m.step)[1:])


def raw_loop_rate(cfg: DictConfig) -> float:
    """What a user would write by hand: the same network, optimizer and schedule, and the
    textbook `DataLoader(TensorDataset(...))` over the same training split."""
    torch.manual_seed(cfg.seed)
    datamodule = training.load_data(cfg)
    net = training.build_network(cfg, datamodule)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer)
    splits = datamodule.splits
    dataset = TensorDataset(torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train))
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True)
    loss_fn = nn.CrossEntropyLoss()
    rates = []
    for _ in range(EPOCHS):
        net.train()
        samples, start = 0, time.perf_counter()
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            optimizer.step()
            samples += len(y)
        rates.append(samples / (time.perf_counter() - start))
        scheduler.step()
    return statistics.median(rates[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--output", type=Path, default=REPORT)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for model in args.models:
            pipeline, raw = [], []
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                cfg = config(model, Path(workdir))
                pipeline.append(pipeline_rate(cfg))
                raw.append(raw_loop_rate(cfg))
            rows.append((model, statistics.median(pipeline), statistics.median(raw)))
    table = markdown_table(
        ["model", "pipeline samples/s", "raw loop samples/s", "pipeline / raw", "target"],
        [
            [
                model,
                f"{pipeline:,.0f}",
                f"{raw:,.0f}",
                ratio(pipeline, raw),
                f">= {TARGET}x: {met(pipeline / raw >= TARGET)}",
            ]
            for model, pipeline, raw in rows
        ],
    )
    body = (
        stamp("bench/train_speed.py")
        + f" Digits, batch 64, {torch.get_num_threads()} torch threads, {EPOCHS} epochs; "
        "median of epochs 2..N per run, then of "
        f"{args.repeats} interleaved runs.\n\n" + table
    )
    write_section("train_speed", body, args.output)
    print(table)


if __name__ == "__main__":
    main()
