"""Training against a real `mlflow server` (sqlite backend, proxied artifacts) works the same
as against the local store, and the REST API the web UI uses sees the run and the version."""

from __future__ import annotations

import json
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from mlops.registry.aliases import rollback
from mlops.registry.history import read_history
from pipelines.train import train
from tests.registry_helpers import STRONG, WEAK


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
    model = mlflow.pyfunc.load_model(
        f"models:/digits-mlp/{result.model_version}", dst_path=str(tmp_path)
    )
    assert model.metadata.run_id == result.run_id
    # MLflow downloads a remote store's model into a temporary folder it never removes;
    # training loaded it twice (the logged graph's check, the gate), and left no copy
    copies = [
        folder
        for folder in Path(tempfile.gettempdir()).glob("*/MLmodel")
        if f"run_id: {result.run_id}" in folder.read_text()
    ]
    assert copies == []


def test_gate_and_history_through_a_tracking_server(make_cfg, server_url: str) -> None:
    name = "server-gate"
    first = train(
        make_cfg(*WEAK, f"logger.tracking_uri={server_url}", f"registry.model_name={name}")
    )
    second = train(
        make_cfg(*STRONG, f"logger.tracking_uri={server_url}", f"registry.model_name={name}")
    )
    assert first.gate.decision.promote and second.gate.decision.promote

    model = rest_get(server_url, "registered-models/get", name=name)["registered_model"]
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {
        "champion": "2",
        "challenger": "2",
    }
    # the model's page: one summary of its history; each version holds its own moves
    assert [t["key"] for t in model["tags"] if t["key"].startswith("mlops.alias")] == [
        "mlops.alias_history"
    ]
    assert len(read_history(MlflowClient(server_url), name)) == 4
    version = rest_get(server_url, "registered-models/alias", name=name, alias="champion")
    assert version["model_version"]["run_id"] == second.run_id

    rollback(MlflowClient(server_url), name, reason="through the server")
    moves = read_history(MlflowClient(server_url), name)
    assert (moves[-1].kind, moves[-1].from_version, moves[-1].to_version) == ("rollback", "2", "1")
