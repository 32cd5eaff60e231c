"""Log the trained network as an MLflow pytorch model and register it as a new version."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from torch import nn

from mlops.data.validation import Label
from mlops.errors import ModelConfigError, first_line
from mlops.messages import LOG, tell
from mlops.models.family import model_family
from mlops.models.inference import inference_model, outputs_problem
from mlops.quiet import silence_unactionable_messages
from mlops.registry.loading import load_logged_model
from mlops.registry.model_metadata import model_metadata


def default_model_name(dataset: str, net: nn.Module) -> str:
    """`<dataset>-<family>`, e.g. `digits-cnn`: one registered model per data/model pair."""
    return f"{dataset}-{model_family(net)}"


def check_model_name(name: str) -> str:
    """MLflow's rule for registered names, checked before training rather than after it."""
    if not name.strip() or "/" in name or ":" in name:
        raise ModelConfigError(
            f"registered model name {name!r} is not one MLflow accepts: it must not be empty "
            "or contain '/' or ':'. Set registry.model_name (or data.name, which the default "
            "name starts with)"
        )
    return name


SERIALIZATION_FORMATS = ("pt2", "pickle")


def check_serialization_format(serialization_format: str) -> None:
    if serialization_format not in SERIALIZATION_FORMATS:
        raise ModelConfigError(
            f"registry.serialization_format={serialization_format!r}; use one of "
            f"{', '.join(SERIALIZATION_FORMATS)}"
        )


def pip_requirements(serialization_format: str) -> list[str]:
    """Pinned from the running environment; inferring them would re-load the model in a
    subprocess on every training."""
    from importlib.metadata import version

    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={version('numpy')}",
    ]
    if serialization_format == "pickle":
        requirements.append(f"cloudpickle=={version('cloudpickle')}")
    return requirements


def _log_model(
    model: nn.Module,
    signature: ModelSignature,
    input_example: np.ndarray,
    fmt: str,
    metadata: dict,
) -> ModelInfo:
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        serialization_format=fmt,
        pip_requirements=pip_requirements(fmt),
        metadata=metadata,
    )


def reproduction_problem(model_uri: str, model: nn.Module, example: np.ndarray) -> str | None:
    """Why the logged model does not give `model`'s outputs for batch sizes other than the
    example's (torch.export keeps only what it saw: a branch on the batch size, say), or
    None when it does."""
    batches = (example[:1], np.concatenate([example, example[:1]]))
    loaded = load_logged_model(mlflow.pytorch.load_model, model_uri)
    return outputs_problem(model, loaded, batches, "exported graph")


def log_model(
    tracking_uri: str,
    run_id: str,
    net: nn.Module,
    input_example: np.ndarray,
    serialization_format: str = "pt2",
    classes: Sequence[Label] = (),
    features: Sequence[str] | None = None,
) -> tuple[ModelInfo, str]:
    """Log `net` (+ softmax) to the run: (its ModelInfo, the format it was logged in).

    `pt2` (MLflow's default, `torch.export`) stores a graph of tensor operations and raw
    tensors, no pickled objects: loading it needs neither mlops nor the network's class.
    Only the batch dimension is free, as in the signature, hence an example of more than one
    sample. A network that torch.export cannot trace, or whose exported graph does not
    reproduce it at other batch sizes, is logged with pickle instead, with a warning: a
    finished training is never lost to its serialization, and no version is registered that
    serves other numbers. `classes` (the label of each output, 0..C-1 when empty) and
    `features` (a CSV's feature columns) go into the MLmodel file's metadata, where
    evaluation, the service and batch predictions read them (mlops.registry.model_metadata).
    """
    check_serialization_format(serialization_format)
    silence_unactionable_messages()  # torch.export's notes on the built-in networks
    if len(input_example) == 1:  # a one-sample example would fix the batch size to 1
        input_example = np.concatenate([input_example, input_example])
    model = inference_model(net)
    with torch.no_grad():
        probabilities = model(torch.from_numpy(input_example)).numpy()
    metadata = model_metadata(classes or range(probabilities.shape[1]), features)
    signature = infer_signature(input_example, probabilities)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        fmt = serialization_format
        if fmt == "pt2":
            try:
                info = _log_model(model, signature, input_example, fmt, metadata)
                problem = reproduction_problem(info.model_uri, model, input_example)
                if problem:  # not left in the run beside the one registered
                    client.delete_logged_model(info.model_id)
            except Exception as error:
                # torch.export raises many types for untraceable code, all torch's own
                if not type(error).__module__.startswith("torch"):
                    raise
                problem = f"torch.export cannot trace {type(net).__name__} ({first_line(error)})"
            if problem:
                tell(
                    f"warning: {problem}; the model is logged with pickle instead, which loads "
                    "only where its class can be imported. Set "
                    "registry.serialization_format=pickle to skip the attempt.",
                    warning=True,
                )
                fmt = "pickle"
        if fmt == "pickle":
            info = _log_model(model, signature, input_example, fmt, metadata)
    return info, fmt


def log_and_register(
    tracking_uri: str,
    run_id: str,
    net: nn.Module,
    input_example: np.ndarray,
    model_name: str,
    version_tags: Mapping[str, str],
    serialization_format: str = "pt2",
    classes: Sequence[Label] = (),
    features: Sequence[str] | None = None,
) -> ModelVersion:
    """Log `net` (+ softmax) to the run (log_model) and register it under `model_name`."""
    info, fmt = log_model(tracking_uri, run_id, net, input_example, serialization_format,
                          classes, features)  # fmt: skip
    client = mlflow.MlflowClient(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints, not logs,
            registered = mlflow.register_model(info.model_uri, model_name)  # what we tell
        for line in said.getvalue().splitlines():  # kept in the job log, off the console
            LOG.info(line)
        version = str(registered.version)
        tags = {**version_tags, "run_id": run_id, "serialization_format": fmt}
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        mlflow.set_tags({"registered_model.name": model_name, "registered_model.version": version})
        return client.get_model_version(model_name, version)
