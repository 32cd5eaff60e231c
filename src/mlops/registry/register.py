"""Log the trained network as an MLflow pytorch model and register it as a new version."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from torch import nn

from mlops.errors import ModelConfigError
from mlops.models.inference import inference_model
from mlops.quiet import silence_unactionable_messages


def model_family(net: nn.Module) -> str:
    """`mlp`, `cnn`, `rnn` for the built-in networks; the class name for any other."""
    return getattr(net, "family", type(net).__name__.lower())


def default_model_name(dataset: str, net: nn.Module) -> str:
    """`<dataset>-<family>`, e.g. `digits-cnn`: one registered model per data/model pair."""
    return f"{dataset}-{model_family(net)}"


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
    model_name: str,
    fmt: str,
) -> ModelInfo:
    return mlflow.pytorch.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        registered_model_name=model_name,
        serialization_format=fmt,
        pip_requirements=pip_requirements(fmt),
    )


def log_and_register(
    tracking_uri: str,
    run_id: str,
    net: nn.Module,
    input_example: np.ndarray,
    model_name: str,
    version_tags: Mapping[str, str],
    serialization_format: str = "pt2",
) -> ModelVersion:
    """Log `net` (+ softmax) to the run and register it under `model_name`.

    `pt2` (MLflow's default, `torch.export`) stores a graph of tensor operations: loading it
    runs no pickled code and needs neither mlops nor the network's class. Only the batch
    dimension is free, as in the signature, hence an example of more than one sample. A
    network that torch.export cannot trace is logged with pickle instead, with a warning:
    a finished training is never lost to its serialization.
    """
    check_serialization_format(serialization_format)
    silence_unactionable_messages()  # torch.export's notes on the built-in networks
    if len(input_example) == 1:  # a one-sample example would fix the batch size to 1
        input_example = np.concatenate([input_example, input_example])
    model = inference_model(net)
    with torch.no_grad():
        probabilities = model(torch.from_numpy(input_example)).numpy()
    signature = infer_signature(input_example, probabilities)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        fmt = serialization_format
        try:
            info = _log_model(model, signature, input_example, model_name, fmt)
        except Exception as error:
            # torch.export raises many types for untraceable code, all torch's own
            if fmt != "pt2" or not type(error).__module__.startswith("torch"):
                raise
            print(
                f"warning: torch.export cannot trace {type(net).__name__} "
                f"({type(error).__name__}: {str(error).splitlines()[0][:300]}); the model is "
                "logged with pickle instead, which loads only where its class can be "
                "imported. Set registry.serialization_format=pickle to skip the attempt.",
                file=sys.stderr,
            )
            fmt = "pickle"
            info = _log_model(model, signature, input_example, model_name, fmt)
        client = mlflow.MlflowClient(tracking_uri)
        version = str(info.registered_model_version)
        tags = {**version_tags, "run_id": run_id, "serialization_format": fmt}
        for key, value in tags.items():
            client.set_model_version_tag(model_name, version, key, value)
        mlflow.set_tags({"registered_model.name": model_name, "registered_model.version": version})
        return client.get_model_version(model_name, version)
