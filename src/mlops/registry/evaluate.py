"""Score a registered version, loaded from the registry, on the test split of a dataset:
the one it was trained on unless told otherwise.

One evaluation run per call (metrics, confusion matrix, data hash, model version), linked
from the version's tags. The gate compares challenger and champion only through this.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from matplotlib import pyplot as plt
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from mlops.data.files import FilesDataModule
from mlops.errors import DataError
from mlops.registry.gate import RECALL_PREFIX
from mlops.registry.loading import load_logged_model, pyfunc_probabilities
from mlops.registry.model_metadata import labels_for_model, logged_classes
from mlops.tracking.lineage import dvc_data_hash, file_md5, pin_status
from mlops.tracking.plots import confusion_matrix_figure
from mlops.tracking.run import artifact_location_for, logged_config


@dataclass(frozen=True)
class Evaluation:
    model_name: str
    version: str
    run_id: str
    metrics: dict[str, float]
    data_md5: str  # the version data.dvc pins
    data_matches_pin: str = "unknown"  # whether the file scored has those bytes


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1, log loss, and recall per class (for the gate's per-class floor).
    As in training, F1 averages over the classes that occur as label or prediction, and
    recall is given for the classes that occur as label: a class the data lacks has none."""
    from sklearn.metrics import f1_score, log_loss, recall_score

    classes = list(range(probabilities.shape[1]))
    predicted = probabilities.argmax(axis=1)
    present = np.unique(labels).tolist()
    occurring = np.union1d(labels, predicted).tolist()
    recalls = recall_score(labels, predicted, labels=present, average=None, zero_division=0)
    return {
        "test/acc": float((predicted == labels).mean()),
        "test/f1": float(
            f1_score(labels, predicted, labels=occurring, average="macro", zero_division=0)
        ),
        "test/loss": float(log_loss(labels, np.clip(probabilities, 1e-7, 1.0), labels=classes)),
        **{f"{RECALL_PREFIX}{c}": float(r) for c, r in zip(present, recalls, strict=True)},
    }


def check_input_shape(
    model: mlflow.pyfunc.PyFuncModel, label: str, data_shape: tuple[int, ...], source: Path
) -> None:
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        return
    expected = tuple(schema.inputs[0].shape)[1:]
    fits = len(expected) == len(data_shape) and all(
        e in (-1, d) for e, d in zip(expected, data_shape, strict=True)
    )
    if not fits:
        raise DataError(
            f"{label} takes inputs shaped {expected}, but {source} has samples shaped "
            f"{data_shape}; evaluate it on the data it was trained on (with no data overrides, "
            "`mlops evaluate` uses its training run's data)"
        )


def chooses_data(overrides: Sequence[str]) -> bool:
    """Whether Hydra overrides choose another data config (`data=...`), which replaces the
    training run's data config rather than changing keys of it."""
    return any(override.split("=", 1)[0].lstrip("+~") == "data" for override in overrides)


def data_key_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of keys under `data` (`data.path=...`, `+data.key=...`, `~data.key`)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~").startswith("data.")]


def training_run_id(version: ModelVersion) -> str | None:
    """The run that trained the version's network: its own run, or for a compressed variant
    (mlops.compress) its parent's, since the compression run logged no training config."""
    return version.tags.get("compress.parent_run_id") or version.run_id or None


def with_training_data(
    cfg: DictConfig, client: MlflowClient, version: ModelVersion, overrides: Sequence[str] = ()
) -> DictConfig | None:
    """`cfg` with the data config the version's training run started with, so that a model
    trained on a user's file is scored on that file without repeating its overrides, and
    `data.path=other.csv` keeps the rest of it (the label column, say); None for a version
    whose run logged no config (registered by other code)."""
    run_id = training_run_id(version)
    config = logged_config(client, run_id) if run_id else None
    data = (config or {}).get("data")
    if not isinstance(data, dict):
        return None
    logged = OmegaConf.create(data)
    for override in data_key_overrides(overrides):  # as composed into cfg, onto the logged
        key = override.split("=", 1)[0].lstrip("+~").removeprefix("data.")
        if override.startswith("~"):
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(logged, parent) if parent else logged
            if isinstance(node, DictConfig):
                node.pop(leaf, None)
        else:
            OmegaConf.update(logged, key, OmegaConf.select(cfg, f"data.{key}"), force_add=True)
    chosen = cfg.copy()
    chosen.data = logged
    return chosen


def training_md5(client: MlflowClient, version: ModelVersion) -> str | None:
    """The md5 of the data file the version's training run read, as tagged on the run; None
    when the run is gone (deleted and garbage-collected) or was not an mlops training."""
    run_id = training_run_id(version)
    if not run_id:
        return None
    try:
        return client.get_run(run_id).data.tags.get("data.file_md5")
    except MlflowException:
        return None


class Evaluator:
    """Evaluates versions of one registered model on one dataset, logging to one experiment."""

    def __init__(
        self,
        client: MlflowClient,
        datamodule: FilesDataModule,
        dvc_file: Path,
        experiment_name: str,
        artifacts_dir: Path,
        parent_run_id: str | None = None,
    ) -> None:
        self.client = client
        # the promotion gate's evaluations nest under the training that ran the gate, so the
        # UI shows one row per training rather than three
        self.parent_run_id = parent_run_id
        self.datamodule = datamodule
        self.data_md5 = dvc_data_hash(dvc_file)
        self.file_md5 = file_md5(datamodule.path)
        self.matches_pin = pin_status(dvc_file.parent, datamodule.path, self.file_md5)
        self.experiment_name = experiment_name
        self.artifacts_dir = artifacts_dir

    def experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        location = artifact_location_for(self.client.tracking_uri, self.artifacts_dir)
        return self.client.create_experiment(self.experiment_name, artifact_location=location)

    def load(self, version: ModelVersion) -> mlflow.pyfunc.PyFuncModel:
        """From the registry, never an in-memory model; checked against the data's shape."""
        label = f"{version.name} version {version.version}"
        uri = f"models:/{version.name}/{version.version}"
        # a models:/ URI resolves against MLflow's global store: make it this client's
        mlflow.set_tracking_uri(self.client.tracking_uri)
        model = load_logged_model(mlflow.pyfunc.load_model, uri)
        check_input_shape(model, label, self.datamodule.input_shape, self.datamodule.path)
        return model

    def evaluate(
        self, version: ModelVersion, model: mlflow.pyfunc.PyFuncModel | None = None
    ) -> Evaluation:
        model = model or self.load(version)
        splits = self.datamodule.splits
        name, number = version.name, str(version.version)
        probabilities = pyfunc_probabilities(model, splits.x_test)
        classes = logged_classes(model.metadata.metadata, probabilities.shape[1])
        y_test = labels_for_model(
            splits.y_test, splits.classes, classes, f"{name} version {number}"
        )
        metrics = classification_metrics(probabilities, y_test)
        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"evaluate {name} v{number}",
            tags={
                "mlops.run_type": "evaluation",
                "model.name": name,
                "model.version": number,
                "model.uri": f"models:/{name}/{number}",
                "model.training_run_id": training_run_id(version) or "",
                "data.dvc_md5": self.data_md5,
                "data.file": str(self.datamodule.path),
                "data.file_md5": self.file_md5,
                "data.matches_pin": self.matches_pin,
                **({"mlflow.parentRunId": self.parent_run_id} if self.parent_run_id else {}),
            },
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        matrix = np.zeros((probabilities.shape[1],) * 2, dtype=int)
        np.add.at(matrix, (y_test, probabilities.argmax(axis=1)), 1)
        figure = confusion_matrix_figure(matrix, f"{name} v{number} on test split", classes)
        self.client.log_figure(run_id, figure, "plots/confusion_matrix.png")
        plt.close(figure)
        self.client.set_terminated(run_id)
        for key, value in {
            "evaluation.run_id": run_id,
            "evaluation.data_file": str(self.datamodule.path),
            "evaluation.data_md5": self.data_md5,
            "evaluation.data_matches_pin": self.matches_pin,
            **{f"evaluation.{k}": f"{v:.6f}" for k, v in metrics.items() if RECALL_PREFIX not in k},
        }.items():
            self.client.set_model_version_tag(name, number, key, value)
        return Evaluation(name, number, run_id, metrics, self.data_md5, self.matches_pin)
