"""Steps of the training pipeline, each small enough to test and reuse on its own."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mlops.data.files import FilesDataModule
from mlops.errors import LaunchError, MlopsError, ModelConfigError, first_line
from mlops.messages import tell
from mlops.models.classifier import Classifier, optimizers_config
from mlops.models.standardize import Standardized
from mlops.quiet import silence_unactionable_messages
from mlops.registry.evaluate import Evaluator
from mlops.registry.gate import GateRule
from mlops.registry.promotion import GateOutcome, run_gate
from mlops.registry.register import (
    check_model_name,
    check_serialization_format,
    default_model_name,
)
from mlops.tracking.resume import (
    LatestCheckpoint,
    ResumePoint,
    epochs_in_checkpoint,
    load_own_checkpoint,
    read_resume_point,
)
from mlops.tracking.sweep import current_sweep_job


@dataclass
class TrainingResult:
    """What a training produced: metrics and where to find the run and model version."""

    metrics: dict[str, float]
    run_id: str | None  # None on the other DDP ranks: only global rank zero has the run
    model_name: str
    model_version: str | None
    checkpoint_path: str
    epochs: int  # epochs actually trained (early stopping may end before max_epochs)
    gate: GateOutcome | None = None  # the promotion gate's outcome, when it ran
    is_global_zero: bool = True  # False in the other processes of a DDP job
    experiment_id: str | None = None


def instantiate_config(node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, re-raising our own errors as they are: Hydra wraps what a
    constructor raises, and its wrapper would bury the one-line message under its own."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, MlopsError):
            raise error.__cause__ from None
        raise


def load_data(cfg: DictConfig) -> FilesDataModule:
    """Instantiate the datamodule and validate its files now, before any run exists."""
    datamodule: FilesDataModule = instantiate_config(cfg.data)
    datamodule.splits  # noqa: B018 - reads and validates; raises DataError naming the problem
    return datamodule


def build_network(cfg: DictConfig, datamodule: FilesDataModule) -> nn.Module:
    """Input shape and class count come from the data, never from the YAML; with
    `data.standardize`, so do the input statistics the network starts with."""
    net = instantiate_config(
        cfg.model, input_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes
    )
    if datamodule.standardize:
        return Standardized.from_training_split(net, datamodule.splits.x_train)
    return net


def build_classifier(cfg: DictConfig, net: nn.Module, num_classes: int) -> Classifier:
    """Lightning builds the optimizer and scheduler only inside `fit`; one trial build now
    refuses a value torch rejects (a negative learning rate) before the run exists."""
    optimizer = instantiate(cfg.optimizer)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    try:
        optimizers_config(net, optimizer, scheduler)
    except (ValueError, TypeError) as error:
        raise ModelConfigError(
            f"the optimizer or scheduler cannot be built: {error}; fix the optimizer.* or "
            "scheduler.* values"
        ) from None
    return Classifier(net, num_classes, optimizer=optimizer, scheduler=scheduler)


def registered_model_name(cfg: DictConfig, net: nn.Module) -> str:
    name = cfg.registry.get("model_name") or default_model_name(cfg.data.name, net)
    return check_model_name(name) if cfg.register else name


def hydra_overrides() -> list[str]:
    """The command-line overrides of this run (empty when composed without `@hydra.main`)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def unset_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted keys whose value is `???`, found without resolving interpolations (which
    may point at Hydra's runtime, absent outside a job)."""
    found = []
    for key in node:
        name = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            found.append(name)
        elif not OmegaConf.is_interpolation(node, key) and OmegaConf.is_dict(node[key]):
            found += unset_keys(node[key], f"{name}.")
    return sorted(found)


def check_launch(cfg: DictConfig) -> None:
    """Launches that cannot work, refused before anything is created: a required value left
    unset (`???`), which would otherwise surface as a traceback mid-job; a GPU trainer where
    torch sees no GPU; and, under Hydra multirun, DDP's `popen` start, which re-runs the
    script once per extra process, so each copy would start the whole sweep again, and a
    resume, which continues one run that every job of a sweep would then train at once."""
    import torch

    if missing := unset_keys(cfg):
        settings = " ".join(f"{key}=..." for key in missing)
        raise LaunchError(
            f"{', '.join(missing)}: no value set (`???` in the config); add it to the "
            f'command, e.g. make train ARGS="... {settings}"'
        )

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise LaunchError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU, and torch {torch.__version__} "
            "sees none (a CPU build of torch, or no driver): train on the CPU with "
            "trainer=cpu, or trainer=ddp_cpu for DDP"
        )

    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if cfg.trainer.get(key) == 0:
            raise LaunchError(
                f"trainer.{key}=0 trains nothing, and the job would test and register the "
                "untrained network; set it above 0"
            )

    multirun = current_sweep_job() is not None
    if multirun and cfg.get("ckpt_path"):
        raise LaunchError(
            f"ckpt_path={cfg.ckpt_path} resumes one interrupted run, which every job of a "
            "sweep (-m) would train at the same time; resume it without -m"
        )
    if (
        multirun
        and reruns_script_per_process(cfg.trainer.get("strategy"))
        and not started_by_slurm()
    ):
        spawn = "ddp_spawn_cpu" if cfg.trainer.get("accelerator") == "cpu" else "ddp_spawn"
        raise LaunchError(
            "DDP that re-runs the script per process (trainer.strategy=ddp, or "
            "trainer.strategy.start_method=popen) cannot run under Hydra multirun (-m): every "
            f"process would re-launch the sweep; use trainer={spawn}"
        )


def started_by_slurm() -> bool:
    """Every process of the job started by SLURM's srun (a sweep's job submitted with
    hydra/launcher=submitit_slurm and tasks_per_node > 1): Lightning takes the ranks from
    SLURM and re-runs nothing, so DDP is safe under a sweep there."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return SLURMEnvironment.detect()


def reruns_script_per_process(strategy: object) -> bool:
    """Lightning's name `ddp`, or a DDP strategy config whose `start_method` is `popen`
    (DDPStrategy's default)."""
    if isinstance(strategy, DictConfig):
        is_ddp = str(strategy.get("_target_", "")).endswith("DDPStrategy")
        return is_ddp and strategy.get("start_method", "popen") == "popen"
    return strategy == "ddp"


def build_trainer(
    cfg: DictConfig, logger: MLFlowLogger, checkpoint_dir: Path | None = None
) -> L.Trainer:
    """The configured trainer and callbacks; `checkpoint_dir` replaces the checkpoint
    callbacks' folder (a resumed training keeps writing to the one it began in, so its best
    checkpoint stays the best of all)."""
    silence_unactionable_messages()
    callbacks = []
    for callback_cfg in (cfg.get("callbacks") or {}).values():
        moved = (
            {"dirpath": str(checkpoint_dir)} if checkpoint_dir and "dirpath" in callback_cfg else {}
        )
        callbacks.append(instantiate(callback_cfg, **moved))
    if checkpoint_dir:  # continuing in that folder is the point, not a mistake to warn of
        warnings.filterwarnings(
            "ignore", message=f"Checkpoint directory {re.escape(str(checkpoint_dir))} exists"
        )
    return instantiate(cfg.trainer, callbacks=callbacks, logger=logger)


def resume_point(cfg: DictConfig) -> ResumePoint | None:
    """The checkpoint to resume and the run it continues, or None for a new training."""
    ckpt_path = cfg.get("ckpt_path")
    return read_resume_point(ckpt_path) if ckpt_path else None


def best_checkpoint(trainer: L.Trainer) -> str:
    """The best checkpoint if one was kept, else the final weights ("" -> Lightning uses them)."""
    callback = trainer.checkpoint_callback
    return getattr(callback, "best_model_path", "") or ""


def load_tested_weights(module: L.LightningModule, checkpoint: str) -> None:
    """The weights of `checkpoint` (the best, which is the one tested) into `module`, to
    register those. A process that ran the test holds them already; but the first process
    of a ddp_spawn job holds the last epoch's (Lightning hands it the weights at the end of
    fit only), and so does any job with `test=false`."""
    if checkpoint:
        module.load_state_dict(load_own_checkpoint(checkpoint)["state_dict"])


def mark_run_failed(logger) -> None:
    """The run FAILED in MLflow; when the tracking server is what failed (down, restarting),
    say so and go on: the job's own error and its resume command matter more."""
    try:
        logger.finalize("failed")
    except Exception as error:
        tell(f"the MLflow run could not be marked FAILED ({first_line(error)}); it stays "
             "RUNNING until the job is resumed", warning=True)  # fmt: skip


def resume_hint(trainer: L.Trainer, overrides: list[str]) -> str | None:
    """After a stop mid-job (Ctrl-C, SIGTERM, a crash): how to continue, not start over."""
    saved = [c.path for c in trainer.callbacks if isinstance(c, LatestCheckpoint)]
    last = next((path for path in saved if path.is_file()), None)
    if last is None:
        return None
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra."))]
    command = " ".join([*kept, f"ckpt_path={last}"])
    done = epochs_in_checkpoint(load_own_checkpoint(last))
    if trainer.state.fn == TrainerFn.FITTING and trainer.state.status != TrainerStatus.FINISHED:
        return (
            f"training stopped after {done} complete epoch{'' if done == 1 else 's'}; to "
            f"resume it in the same MLflow run, run it again with these overrides: {command}"
        )
    return (
        f"the job failed after its {done} epochs of training; to finish it "
        f"(test, register) in the same MLflow run without training again, run it again with "
        f"these overrides: {command}"
    )


def end_distributed() -> None:
    """Leave the DDP process group cleanly (torch warns at exit otherwise); no-op without DDP."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def metrics_as_floats(trainer: L.Trainer) -> dict[str, float]:
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def summary_scores(metrics: dict[str, float]) -> str:
    """The run's one-line result: its test scores, or with `test=false` its validation
    scores, said to be such, so an untested run does not print an empty list."""
    tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
    shown = tested or {k: v for k, v in metrics.items() if k.startswith("val/")}
    scores = ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
    return scores if tested else f"not tested (test=false); {scores or 'no val/ metric'}"


def optimized_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """What the job returns to an optimizing sweeper: `optimized_metric` of its metrics. In
    a sweep, a name this job did not log (a typo) is a warning, not a failure: the training
    itself succeeded. Outside one nothing reads it (a resume with no epoch left to train
    logs no `val/` metric), so it is not worth a warning."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    if name in metrics:
        return metrics[name]
    if current_sweep_job() is None:  # nothing reads the value: no warning to act on
        return None
    warnings.warn(
        f"optimized_metric={name} was not logged by this job, so it returns nothing to a "
        f"sweeper; logged: {', '.join(sorted(metrics))}",
        stacklevel=2,
    )
    return None


def check_registry_config(cfg: DictConfig) -> None:
    """Registration and the gate run after training: their settings are checked before it,
    so a typo cannot cost a training."""
    check_serialization_format(cfg.registry.serialization_format)
    if cfg.registry.gate.enabled:
        gate_rule(cfg)


def log_reference_profile(
    tracking_uri: str, run_id: str, version: ModelVersion, datamodule: FilesDataModule,
    net: nn.Module,
) -> str:  # fmt: skip
    """The version's monitoring reference (mlops.monitoring.reference), from the training
    and validation splits and the registered weights; returns its sha256."""
    import torch

    from mlops.models.inference import inference_model
    from mlops.monitoring.reference import log_reference, reference_profile

    model = inference_model(net)

    def probabilities(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    splits = datamodule.splits
    profile = reference_profile(
        splits.x_train, splits.y_train, splits.x_val, splits.y_val, probabilities,
        datamodule.classes, datamodule.feature_names,
    )  # fmt: skip
    client = MlflowClient(tracking_uri)
    return log_reference(client, run_id, version, profile, splits.x_train, splits.y_train)


def gate_rule(cfg: DictConfig) -> GateRule:
    gate = cfg.registry.gate
    return GateRule(gate.metric, gate.direction, float(gate.min_delta), gate.get("per_class_floor"))


def evaluator_for(
    cfg: DictConfig,
    client: MlflowClient,
    datamodule: FilesDataModule,
    parent_run_id: str | None = None,
) -> Evaluator:
    return Evaluator(
        client,
        datamodule,
        Path(cfg.paths.dvc_file),
        cfg.logger.experiment_name,
        Path(cfg.paths.mlflow_artifacts_dir),
        parent_run_id,
    )


def promotion_gate(
    cfg: DictConfig, tracking_uri: str, datamodule: FilesDataModule, version: ModelVersion
) -> GateOutcome:
    client = MlflowClient(tracking_uri)
    evaluator = evaluator_for(cfg, client, datamodule, parent_run_id=version.run_id)
    return run_gate(client, version.name, str(version.version), gate_rule(cfg), evaluator)
