"""A registered RNN version's network rebuilt from its training run (logged config and best
checkpoint), for an ONNX export whose sequence length is free: the registered `pt2` graph
fixes every dimension but the batch."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mlops.data.files import FilesDataModule


def steps_axis(sample_shape: tuple[int, ...]) -> int:
    """The batch's axis the RNN reads as time (mlops.models.rnn.sequence_view): the rows
    of a (C, H, W) sample, the first axis of a (T,) or (T, F) one."""
    return 2 if len(sample_shape) == 3 else 1


def best_checkpoint(client: MlflowClient, run_id: str, folder: Path) -> Path | None:
    """The checkpoint the run logged under Lightning's `best` alias, downloaded."""
    for entry in client.list_artifacts(run_id):
        if not entry.is_dir:
            continue
        names = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run_id, entry.path)}
        if "aliases.txt" not in names:
            continue
        aliases = Path(client.download_artifacts(run_id, f"{entry.path}/aliases.txt", str(folder)))
        if "'best'" in aliases.read_text():
            (checkpoint,) = [n for n in names if n.endswith(".ckpt")] or [None]
            if checkpoint:
                return Path(
                    client.download_artifacts(run_id, f"{entry.path}/{checkpoint}", str(folder))
                )
    return None


def rebuilt_rnn(
    client: MlflowClient, version: ModelVersion, data_cfg: DictConfig, datamodule: FilesDataModule
) -> tuple[nn.Module | None, str]:
    """The version's network in eval mode (as logged: mlops.models.inference), or None and
    why not: not an RNN, standardized inputs (their statistics have the trained length), or
    a run without its config or best checkpoint."""
    import torch

    from mlops import training
    from mlops.models.family import model_family
    from mlops.models.inference import inference_model
    from mlops.registry.evaluate import training_run_id
    from mlops.tracking.run import logged_config

    run_id = training_run_id(version)
    if version.tags.get("model.family") != "rnn" or not run_id:
        return None, "not an RNN"
    if datamodule.standardize:
        return None, "its inputs are standardized per element of the trained length"
    config = logged_config(client, run_id)
    if not config or "model" not in config:
        return None, f"its training run {run_id} logged no config"
    cfg = data_cfg.copy()
    cfg.model = OmegaConf.create(config["model"])
    net = training.build_network(cfg, datamodule)
    if model_family(net) != "rnn":
        return None, "not an RNN"
    with tempfile.TemporaryDirectory(prefix="mlops-ckpt-") as folder:
        try:
            checkpoint = best_checkpoint(client, run_id, Path(folder))
        except MlflowException:
            checkpoint = None
        if checkpoint is None:
            return None, f"its training run {run_id} logged no best checkpoint"
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    net.load_state_dict(weights)
    return inference_model(net.eval()), ""


def other_lengths(samples: np.ndarray, axis: int) -> list[np.ndarray]:
    """The samples at two other sequence lengths: cut to half, and extended by repeating
    their first steps."""
    steps = samples.shape[axis]
    shorter = np.take(samples, range(max(steps // 2, 1)), axis=axis)
    longer = np.concatenate([samples, np.take(samples, range(min(3, steps)), axis=axis)], axis)
    return [np.ascontiguousarray(shorter), np.ascontiguousarray(longer)]
