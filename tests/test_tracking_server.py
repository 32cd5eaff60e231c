"""Training against a real `mlflow server` (sqlite backend, proxied artifacts) works the same
as against the local store, and the REST API the web UI uses sees the run and the version."""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from pipelines.train import train
from tests.servers import free_port, running_server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{home / 'server.db'}",
        "--artifacts-destination", str(home / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running_server(command, f"{url}/health", home / "server.log"):
        yield url


def rest_get(url: str, endpoint: str, **query: str) -> dict:
    with urllib.request.urlopen(
        f"{url}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
    ) as r:
        return json.load(r)


def test_training_against_a_tracking_server(make_cfg, server_url: str, tmp_path: Path) -> None:
    result = train(make_cfg("model=mlp", f"logger.tracking_uri={server_url}"))

    run = rest_get(server_url, "runs/get", run_id=result.run_id)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:")  # proxied by the server
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["model.family"] == "mlp"
    assert any(m["key"] == "test/acc" for m in run["data"]["metrics"])

    version = rest_get(
        server_url, "model-versions/get", name="digits-mlp", version=result.model_version
    )["model_version"]
    assert version["run_id"] == result.run_id

    client = mlflow.MlflowClient(server_url)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/learning_curves.png"}
    assert not (tmp_path / "mlartifacts").exists()  # nothing written to the local folder
    model = mlflow.pyfunc.load_model(f"models:/digits-mlp/{result.model_version}")
    assert model.metadata.run_id == result.run_id
