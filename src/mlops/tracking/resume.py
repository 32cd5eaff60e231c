"""Resume an interrupted training into its own MLflow run and checkpoint folder, so that the
job that finally finishes is still one run, and its best checkpoint the best of all epochs.

A checkpoint names the run it belongs to (`LatestCheckpoint`); `ckpt_path=` reads it back,
and refuses what the checkpoint cannot honestly continue: other data, another store, or a
model, optimizer or scheduler config that differs from the one whose state it holds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from mlops.errors import MlopsError
from mlops.tracking.run import CONFIG_ARTIFACT, logged_config

RUN_ID_KEY = "mlops_mlflow_run_id"
RNG_KEY = "mlops_rng_states"
FIT_STOPPED_KEY = "mlops_fit_stopped"  # early stopping (or another callback) ended the fit
# Their state is restored from the checkpoint: a different config would not be what runs.
RESTORED_GROUPS = ("model", "optimizer", "scheduler")
RESTORED_KEYS = ("data.standardize",)  # the model's input statistics, or their absence
# Differ on every launch by construction, as does every path inside the output folder.
PER_LAUNCH_KEYS = ("ckpt_path", "paths.output_dir")


class ResumeError(MlopsError, ValueError):
    """A checkpoint that cannot be resumed as asked."""


class LatestCheckpoint(L.Callback):
    """Rewrites `<dirpath>/last.ckpt` at the end of every training epoch, after its
    validation, so a stop loses at most the epoch in progress. (Lightning's own `save_last`
    writes it only when the monitored checkpoint is saved, i.e. when `val/acc` improves: a
    resume from it could go back many epochs.) Written to a temporary file and renamed, so a
    kill during the write leaves the previous one intact.

    It also writes into every checkpoint the trainer saves the MLflow run id, for
    `ckpt_path=` to continue that run, and the random generators' states, which Lightning
    does not keep: restored with the checkpoint, they make a resumed training draw the same
    shuffles and dropout masks as an uninterrupted one. (One callback, not three:
    Lightning calls every hook of every callback on every step, 1.3-2.6 us a hook, profiled;
    see docs/benchmarks.md.)"""

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath).expanduser().resolve() / self.FILENAME
        self.resumes_a_stopped_fit = False

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[RUN_ID_KEY] = getattr(trainer.logger, "run_id", None)
        checkpoint[RNG_KEY] = rng_states()
        checkpoint[FIT_STOPPED_KEY] = trainer.should_stop

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        # Nothing draws between here and the resumed epoch's DataLoader iterator, which takes
        # its shuffle (Lightning skips the sanity check when resuming). Every rank gets rank
        # zero's states, which equal its own: all ranks are seeded alike and draw alike.
        if RNG_KEY in checkpoint:
            set_rng_states(checkpoint[RNG_KEY])
        self.resumes_a_stopped_fit = bool(checkpoint.get(FIT_STOPPED_KEY))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning does not keep `should_stop`: a training that early stopping had ended, and
        # that failed afterwards (testing, registering), would train one more epoch on resume.
        if self.resumes_a_stopped_fit:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Early stopping may decide in its own on_train_epoch_end, after this callback's:
        # written once more, last.ckpt records that the training was stopped.
        if trainer.should_stop:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        partial = self.path.with_suffix(".ckpt.partial")
        # every rank calls it, rank zero writes; the full state, said explicitly (left unset,
        # Lightning logs a line per call)
        trainer.save_checkpoint(partial, weights_only=False)
        if trainer.is_global_zero:
            partial.replace(self.path)


def rng_states() -> dict[str, Any]:
    """torch's, numpy's and Python's generators (and this CUDA device's), in types that a
    `weights_only` load (Lightning's default for `ckpt_path`) accepts."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


@dataclass(frozen=True)
class ResumePoint:
    checkpoint: Path
    run_id: str
    step: int  # the global step it was saved at: where the run's metrics continue


@dataclass(frozen=True)
class ResumedRun:
    """What the pipeline needs to continue the run: its lineage as first recorded, and the
    tags that record this resume."""

    lineage: dict[str, str]
    resume_tags: dict[str, str]


def load_own_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint a training of this project wrote, on the CPU and read lazily (mmap):
    not weights only, since it also holds the random generators' states and the run id."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def read_resume_point(ckpt_path: str) -> ResumePoint:
    path = Path(ckpt_path).expanduser().resolve()
    hint = "pass the last.ckpt of the interrupted run: logs/train/runs/<time>/checkpoints/last.ckpt"
    if not path.is_file():
        raise ResumeError(f"ckpt_path={ckpt_path} is not a file; {hint}")
    try:
        checkpoint = load_own_checkpoint(path)
    except Exception as error:  # torch raises several types for a file that is no checkpoint
        raise ResumeError(
            f"ckpt_path={ckpt_path} is not a readable checkpoint ({error}); {hint}"
        ) from None
    run_id = checkpoint.get(RUN_ID_KEY) if isinstance(checkpoint, dict) else None
    if not run_id:
        raise ResumeError(
            f"ckpt_path={ckpt_path} names no MLflow run (not written by an mlops training); "
            "to start a new run from its weights, load them in your own code"
        )
    return ResumePoint(
        checkpoint=path, run_id=str(run_id), step=int(checkpoint.get("global_step", 0))
    )


def first_config(client: MlflowClient, run_id: str) -> dict[str, Any]:
    config = logged_config(client, run_id)
    if config is None:
        raise ResumeError(
            f"run {run_id} has no {CONFIG_ARTIFACT} artifact to compare the config with; "
            "it was not started by an mlops training"
        )
    return config


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: the override syntax users type."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flat_config(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple]:
    """Keys whose value differs, added or removed (as None), except the per-launch ones:
    the output folder, and paths at the same place inside each launch's output folder
    (`trainer.default_root_dir`, checkpoint folders)."""
    old, new = flat_config(before), flat_config(after)
    old_folder, new_folder = str(old.get("paths.output_dir")), str(new.get("paths.output_dir"))

    def per_launch(key: str) -> bool:
        below = below_folder(old.get(key), old_folder)
        return key in PER_LAUNCH_KEYS or (
            below is not None and below == below_folder(new.get(key), new_folder)
        )

    return {
        key: (old.get(key), new.get(key))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key) and not per_launch(key)
    }


def below_folder(value: Any, folder: str) -> str | None:
    """The rest of a path that starts with `folder`; None for any other value."""
    if isinstance(value, str) and value.startswith(folder):
        return value[len(folder) :]
    return None


def describe(changes: Mapping[str, tuple], limit: int = 5000) -> str:
    """One line, within MLflow's limit on a tag's value."""
    text = "; ".join(f"{key}: {old} -> {new}" for key, (old, new) in changes.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resumable(
    client: MlflowClient, point: ResumePoint, lineage: Mapping[str, str], cfg: DictConfig
) -> ResumedRun:
    """The run exists in this store, trained on the same data bytes, with the same model,
    optimizer and scheduler config; everything else that changed is recorded, not refused."""
    try:
        run = client.get_run(point.run_id)
    except MlflowException:
        raise ResumeError(
            f"{point.checkpoint} belongs to MLflow run {point.run_id}, which is not in "
            f"{client.tracking_uri}; set MLFLOW_TRACKING_URI to the store it was trained with"
        ) from None
    if run.info.status == "FINISHED":
        raise ResumeError(
            f"run {point.run_id} finished; ckpt_path= continues an interrupted training, so "
            "that one training stays one run and one model version. Start a new training"
        )
    trained_on, now = run.data.tags.get("data.file_md5"), lineage["data.file_md5"]
    if trained_on != now:
        raise ResumeError(
            f"run {point.run_id} trained on {run.data.tags.get('data.file')} with md5 "
            f"{trained_on}; {lineage['data.file']} now has md5 {now}. Restore that data "
            "(`dvc checkout`) to resume, or start a new training"
        )
    changes = config_changes(
        first_config(client, point.run_id), OmegaConf.to_container(cfg, resolve=True)
    )
    restored = {
        k: v for k, v in changes.items() if k.split(".")[0] in RESTORED_GROUPS or k in RESTORED_KEYS
    }
    if restored:
        raise ResumeError(
            "the checkpoint restores the model, optimizer and scheduler of run "
            f"{point.run_id}, and these settings differ from its config: {describe(restored)}. "
            "Resume with the run's values, or start a new training"
        )
    resume_tags = {
        "resume.ckpt_path": str(point.checkpoint),
        "resume.from_step": str(point.step),
        "resume.config_changes": describe(changes) or "(none)",
    }
    resume_tags |= {
        f"resume.{key}": value
        for key, value in lineage.items()
        if run.data.tags.get(key) != value and not key.startswith("mlflow.")
    }
    first_lineage = {key: run.data.tags.get(key, value) for key, value in lineage.items()}
    return ResumedRun(lineage=first_lineage, resume_tags=resume_tags)


def epochs_in_checkpoint(checkpoint: dict[str, Any]) -> int:
    """The epochs whose training a checkpoint holds, which a resume continues after. Not
    the trainer's count: a fit stopped at an epoch's end has counted that epoch, one stopped
    within an epoch has not, and a ddp_spawn job's own process, which did not train, counts
    none. Nor the checkpoint's `epoch`, the trainer's count when it was saved: one less at
    an epoch's end than at the training's end."""
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {})
    return int(progress.get("current", {}).get("processed", checkpoint.get("epoch", -1) + 1))
