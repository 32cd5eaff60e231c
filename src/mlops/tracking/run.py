"""The MLflow run of a training: logger, params, config and plot artifacts."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.loggers import MLFlowLogger
from matplotlib import pyplot as plt
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from mlops.tracking.plots import confusion_matrix_figure, learning_curves_figure

LOCAL_SCHEMES = ("sqlite:", "file:", "postgresql", "mysql", "mssql")
CURVE_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc")
CONFIG_ARTIFACT = "config/train.yaml"  # the resolved config a run started with


UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` serves a local store


def ui_link(tracking_uri: str, page: str) -> str:
    """The MLflow UI page of a run or model version: on the tracking server, or on
    `make ui` for a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/{page}"
    return f"{UI_ADDRESS}/#/{page} (after make ui)"


def artifact_location_for(tracking_uri: str, artifacts_dir: Path) -> str | None:
    """A project folder for a local database store (MLflow would otherwise use `./mlruns`
    of whatever directory the first run started in); a tracking server chooses its own."""
    if tracking_uri.startswith(LOCAL_SCHEMES):
        return artifacts_dir.resolve().as_uri()
    return None


@contextmanager
def store_creation_lock(tracking_uri: str) -> Iterator[None]:
    """Serialize the first connection to a sqlite store: MLflow creates and migrates the
    schema on connect, and two processes doing it at once (torchrun ranks, two trainings
    on a new project) fail with `duplicate column`."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def build_mlflow_logger(
    logger_cfg: DictConfig,
    tags: Mapping[str, str],
    artifacts_dir: Path,
    run_id: str | None = None,
) -> MLFlowLogger:
    """Instantiate the configured `MLFlowLogger` with lineage tags and, unless the config
    sets one, a concrete artifact location; with `run_id`, it continues that run."""
    from hydra.utils import instantiate

    artifact_location = logger_cfg.get("artifact_location") or artifact_location_for(
        logger_cfg.tracking_uri, artifacts_dir
    )
    run_name = logger_cfg.get("run_name") or (None if run_id else unseeded_run_name())
    with store_creation_lock(logger_cfg.tracking_uri):
        if run_id is None:
            ensure_experiment(
                MlflowClient(logger_cfg.tracking_uri), logger_cfg.experiment_name, artifact_location
            )
        return instantiate(
            logger_cfg,
            tags=dict(tags),
            artifact_location=artifact_location,
            run_id=run_id,
            run_name=run_name,
        )


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> None:
    """Create the experiment unless it exists, as Lightning's logger would, but tolerating
    another training creating it at the same moment: four trainings starting together on a
    new tracking server otherwise fail all but one with RESOURCE_ALREADY_EXISTS."""
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def unseeded_run_name() -> str:
    """MLflow's adjective-noun-number run name, drawn from fresh entropy. A local store
    draws it from Python's global `random`, which the training seed has just set: every
    training with the same seed would be named alike in the UI. The seeded state is put
    back, so the training still draws what its seed says."""
    from mlflow.utils.name_utils import _generate_random_name

    seeded = random.getstate()
    try:
        random.seed()
        return _generate_random_name()
    finally:
        random.setstate(seeded)


def logged_config(client: MlflowClient, run_id: str) -> dict[str, Any] | None:
    """The resolved config a run started with (its `CONFIG_ARTIFACT`); None for a run that
    has none, i.e. one not started by an mlops training."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, CONFIG_ARTIFACT, folder)
        except (MlflowException, OSError):
            return None
        return yaml.safe_load(Path(local).read_text())


def log_config(logger: MLFlowLogger, cfg: DictConfig) -> None:
    """Every resolved key as a param (searchable in the UI) and the whole YAML as an artifact
    (to re-run exactly)."""
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    logger.log_hyperparams(resolved)
    logger.experiment.log_text(logger.run_id, OmegaConf.to_yaml(resolved), CONFIG_ARTIFACT)


def log_resume(logger: MLFlowLogger, cfg: DictConfig, step: int, tags: Mapping[str, str]) -> None:
    """Mark the continued run as running again and record the resume next to the first
    config: MLflow params cannot change, so the resumed config is an artifact of its own."""
    from mlflow.entities import RunTag

    logger.experiment.update_run(logger.run_id, status="RUNNING")
    logger.experiment.log_batch(logger.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    logger.experiment.log_text(
        logger.run_id, OmegaConf.to_yaml(cfg, resolve=True), f"config/resumed-at-step-{step}.yaml"
    )


def log_environment(logger: MLFlowLogger, resumed_at_step: int | None = None) -> None:
    """Every installed distribution and version (`pip freeze` without the subprocess), so a
    version's environment can be rebuilt; a resumed job logs its own beside the first's,
    since it may run elsewhere or after an upgrade."""
    from importlib.metadata import distributions

    pinned = sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()}, key=str.lower)
    name = (
        "pip-freeze" if resumed_at_step is None else f"pip-freeze-resumed-at-step-{resumed_at_step}"
    )
    logger.experiment.log_text(logger.run_id, "\n".join(pinned) + "\n", f"environment/{name}.txt")


def metric_history(
    logger: MLFlowLogger, keys: tuple[str, ...] = CURVE_METRICS
) -> dict[str, list[float]]:
    """Per-epoch values as stored in MLflow, ordered by step: the curves show what the UI has."""
    client = logger.experiment
    return {
        key: [
            m.value
            for m in sorted(client.get_metric_history(logger.run_id, key), key=lambda m: m.step)
        ]
        for key in keys
    }


def log_confusion_matrix(
    logger: MLFlowLogger, confusion_matrix, classes: Sequence[object] = ()
) -> None:
    """The test split's confusion matrix (rows: true labels), as plots/confusion_matrix.png."""
    figure = confusion_matrix_figure(confusion_matrix.numpy(), classes=classes)
    _log_figure(logger, figure, "plots/confusion_matrix.png")


def log_learning_curves(logger: MLFlowLogger) -> None:
    """Loss and accuracy per epoch, train against val, as plots/learning_curves.png."""
    _log_figure(logger, learning_curves_figure(metric_history(logger)), "plots/learning_curves.png")


def _log_figure(logger: MLFlowLogger, figure, artifact_file: str) -> None:
    logger.experiment.log_figure(logger.run_id, figure, artifact_file)
    plt.close(figure)
