"""How a trained network is logged and loaded back: a torch.export graph by default, pickle
for a network whose exported graph would not reproduce it; the service's loader gives
pyfunc's numbers."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from torch import nn

from mlops.models.cnn import CNN
from mlops.models.inference import (
    free_batch_sample_shape,
    inference_model,
    lifted_forward,
    load_probability_model,
)
from mlops.registry.register import log_and_register


class LinearOnDigits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)


class BranchesOnValues(LinearOnDigits):
    """A branch on a tensor's value: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits if logits.sum() > 0 else -logits


class BranchesOnBatchSize(LinearOnDigits):
    """Eager, any batch size works; torch.export keeps the branch it saw (batch >= 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits * 2 if x.shape[0] > 3 else logits


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
    exported = Path(model_dir) / "data" / "model.pt2"
    assert exported.exists() == (serialization_format == "pt2")
    if exported.exists():  # the saved program still qualifies for the direct graph call
        assert lifted_forward(torch.export.load(exported)) is not None
    probabilities = load_probability_model(model_dir)
    pyfunc = mlflow.pyfunc.load_model(uri)
    for count in (1, 3, 64, 256):
        x = samples(count, seed=count)
        np.testing.assert_allclose(probabilities(x), pyfunc.predict(x), atol=1e-6)


@pytest.mark.parametrize(
    ("net", "reason"),
    [
        (BranchesOnValues, "torch.export cannot trace BranchesOnValues"),
        (BranchesOnBatchSize, r"the exported graph refuses a batch of 1 \(.*>= 4\)"),
    ],
)
def test_a_network_the_exported_graph_cannot_reproduce_is_logged_with_pickle(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture, net, reason: str
) -> None:
    """The training is not lost to its serialization, no version serves other numbers than
    the network's, and the warning says why and what it costs."""
    torch.manual_seed(0)
    net = net()
    version = log_and_register(
        tracking_uri,
        new_run(tracking_uri, tmp_path),
        net,
        samples(5),
        f"fallback-{tmp_path.name}",
        {},
    )
    warning = capsys.readouterr().err
    assert re.search(reason, warning), warning
    assert "logged with pickle instead" in warning
    assert version.tags["serialization_format"] == "pickle"
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_run(version.run_id).info.experiment_id
    logged = client.search_logged_models(
        [experiment], filter_string=f"source_run_id = '{version.run_id}'"
    )
    usable = [m.model_id for m in logged if m.status.name == "READY"]
    assert [f"models:/{model_id}" for model_id in usable] == [version.source], version.source
    loaded = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}")
    for count in (1, 5):
        x = samples(count)
        with torch.no_grad():
            expected = inference_model(net)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-6)


class TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x + 1


def export(net: nn.Module, batch: int = 5) -> torch.export.ExportedProgram:
    """As MLflow exports: the signature's batch dimension left to torch.export."""
    example = torch.zeros(batch, 1, 8, 8)
    return torch.export.export(net, (example,), dynamic_shapes=[{0: torch.export.Dim.AUTO}])


def test_lifted_forward_runs_only_programs_that_take_any_batch_size() -> None:
    """Anything else keeps `ExportedProgram.module()`, whose checks refuse what the graph
    was not traced for; the graph alone would silently run the wrong branch."""
    assert free_batch_sample_shape(export(BranchesOnBatchSize())) is None
    assert lifted_forward(export(BranchesOnBatchSize())) is None
    assert lifted_forward(export(TwoOutputs())) is None
    static = torch.export.export(CNN((1, 8, 8), 10).eval(), (torch.zeros(2, 1, 8, 8),))
    assert lifted_forward(static) is None

    net = inference_model(CNN((1, 8, 8), 10))
    program = export(net)
    assert free_batch_sample_shape(program) == (1, 8, 8)
    forward = lifted_forward(program)
    assert forward is not None
    with torch.inference_mode():
        for count in (1, 2, 64):
            x = torch.from_numpy(samples(count))
            torch.testing.assert_close(forward(x), net(x))
        with pytest.raises(ValueError, match=r"samples shaped \(1, 8, 9\); the model takes"):
            forward(torch.zeros(2, 1, 8, 9))


class RunsOnLoad:
    """A pickled object that creates a file when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_a_pt2_archive_carrying_a_pickled_object_is_refused_before_it_runs(
    tmp_path: Path,
) -> None:
    """torch.export.load would unpickle it in full (it falls back from the restricted
    unpickler); the service's loader has MLflow refuse the archive first."""
    import zipfile

    from mlflow.exceptions import MlflowException

    model_dir = tmp_path / "model"
    mlflow.pytorch.save_model(
        LinearOnDigits().linear, str(model_dir), serialization_format="pt2",
        input_example=np.zeros((2, 64), dtype=np.float32),
    )  # fmt: skip
    archive = model_dir / "data" / "model.pt2"
    marker = tmp_path / "payload-ran"
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(archive) as original, zipfile.ZipFile(crafted, "w") as copy:
        for record in original.infolist():
            payload = original.read(record)
            if record.filename.endswith("sample_inputs/model.pt"):
                payload = tmp_path / "payload.pt"
                torch.save({"inputs": RunsOnLoad(marker)}, payload)
                payload = payload.read_bytes()
            copy.writestr(record, payload)
    crafted.replace(archive)

    with pytest.raises(MlflowException, match="not a pickle-free payload"):
        load_probability_model(model_dir)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # what the check prevents: the object is unpickled
        torch.export.load(archive)  # (then the load fails, too late)
    assert marker.exists()
