"""How a trained network is logged and loaded back: a torch.export graph by default, pickle
for a network torch.export cannot trace; the service's loader gives pyfunc's numbers."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from mlops.models.cnn import CNN
from mlops.models.inference import inference_model, lifted_forward, load_probability_model
from mlops.registry.register import log_and_register


class BranchesOnValues(nn.Module):
    """A branch on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits if logits.sum() > 0 else -logits


def new_run(tracking_uri: str, tmp_path: Path) -> str:
    client = mlflow.MlflowClient(tracking_uri)
    name = f"model-logging-{tmp_path.name}"
    experiment = client.create_experiment(name, artifact_location=str(tmp_path / "artifacts"))
    return client.create_run(experiment).info.run_id


def samples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 8, 8), dtype=np.float32)


@pytest.mark.parametrize("serialization_format", ["pt2", "pickle"])
def test_the_service_loader_gives_pyfunc_numbers_for_any_batch_size(
    tracking_uri: str, tmp_path: Path, serialization_format: str
) -> None:
    """A one-sample example still leaves the batch dimension free."""
    torch.manual_seed(0)
    version = log_and_register(
        tracking_uri, new_run(tracking_uri, tmp_path), CNN((1, 8, 8), 10), samples(1),
        f"loader-{serialization_format}", {}, serialization_format,
    )  # fmt: skip
    assert version.tags["serialization_format"] == serialization_format
    uri = f"models:/{version.name}/{version.version}"
    model_dir = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model"))
    assert (Path(model_dir) / "data" / "model.pt2").exists() == (serialization_format == "pt2")
    probabilities = load_probability_model(model_dir)
    pyfunc = mlflow.pyfunc.load_model(uri)
    for count in (1, 3, 64, 256):
        x = samples(count, seed=count)
        np.testing.assert_allclose(probabilities(x), pyfunc.predict(x), atol=1e-6)


def test_a_network_torch_export_cannot_trace_is_logged_with_pickle(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The training is not lost to its serialization; the warning says why and what it costs."""
    torch.manual_seed(0)
    net = BranchesOnValues()
    version = log_and_register(
        tracking_uri, new_run(tracking_uri, tmp_path), net, samples(5), "untraceable", {}
    )
    warning = capsys.readouterr().err
    assert "torch.export cannot trace BranchesOnValues" in warning
    assert "logged with pickle instead" in warning
    assert version.tags["serialization_format"] == "pickle"
    x = samples(4)
    loaded = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    with torch.no_grad():
        expected = inference_model(net)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-6)


class TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x + 1


def test_lifted_forward_runs_one_input_one_output_programs_only() -> None:
    """Anything else keeps `ExportedProgram.module()`."""
    assert lifted_forward(torch.export.export(TwoOutputs(), (torch.zeros(2, 3),))) is None
    net = inference_model(CNN((1, 8, 8), 10))
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),))
    forward = lifted_forward(program)
    assert forward is not None
    x = torch.from_numpy(samples(2))
    with torch.inference_mode():
        torch.testing.assert_close(forward(x), net(x))
