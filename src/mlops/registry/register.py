"""Log the trained network as an MLflow pytorch model and register it as a new version."""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature
from torch import nn

from mlops.models.inference import inference_model


def model_family(net: nn.Module) -> str:
    """`mlp`, `cnn`, `rnn` for the built-in networks; the class name for any other."""
    return getattr(net, "family", type(net).__name__.lower())


def default_model_name(dataset: str, net: nn.Module) -> str:
    """`<dataset>-<family>`, e.g. `digits-cnn`: one registered model per data/model pair."""
    return f"{dataset}-{model_family(net)}"


def pip_requirements() -> list[str]:
    """Pinned from the running environment; inferring them would re-load the model in a
    subprocess on every training."""
    from importlib.metadata import version

    return [
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={version('numpy')}",
        f"cloudpickle=={version('cloudpickle')}",
    ]


def log_and_register(
    tracking_uri: str,
    run_id: str,
    net: nn.Module,
    input_example: np.ndarray,
    model_name: str,
    version_tags: Mapping[str, str],
) -> ModelVersion:
    """Log `net` (+ softmax) to the run and register it under `model_name`.

    Saved with pickle rather than MLflow's default `torch.export`: export freezes every
    non-batch dimension to the example's shape, so the signature would promise more than
    the saved model accepts. The signature has a free batch dimension.
    """
    model = inference_model(net)
    with torch.no_grad():
        probabilities = model(torch.from_numpy(input_example)).numpy()
    signature = infer_signature(input_example, probabilities)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            registered_model_name=model_name,
            serialization_format="pickle",
            pip_requirements=pip_requirements(),
        )
        client = mlflow.MlflowClient(tracking_uri)
        version = str(info.registered_model_version)
        for key, value in {**version_tags, "run_id": run_id}.items():
            client.set_model_version_tag(model_name, version, key, value)
        mlflow.set_tags({"registered_model.name": model_name, "registered_model.version": version})
        return client.get_model_version(model_name, version)
