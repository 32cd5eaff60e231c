"""`mlops compress`: ONNX and int8 variants of registered versions, against a real MLflow
store; each variant is checked through the registry, as a user would load it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import bentoml
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops.cli import main
from mlops.compress.gate import CompressionRule, Scores, refusals
from mlops.compress.run import compress
from mlops.compress.runtime import onnx_session
from mlops.registry.history import read_history
from mlops.serving.batch import predict_file
from mlops.serving.deploy import deploy
from mlops.serving.onnx_model import load_onnx_probabilities, onnx_file
from pipelines.train import train
from tests.conftest import FAST, KNOWN_CHATTER, ROOT, compose_config
from tests.registry_helpers import registry_state
from tests.servers import free_port
from tests.test_serving import FROM_THE_BENTO_ALONE, get, pinned_site, post

FAMILIES = {
    "mlp": ["model=mlp", "trainer.max_epochs=8"],
    "cnn": ["model=cnn", "trainer.max_epochs=5"],
    "rnn": ["model=rnn"],  # GRU: the cell public trackers report exported wrongly
}


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, digits_file: Path, tracking_uri: str
) -> Callable[[str], tuple]:
    """Per family, on first use: one version trained on all training batches (a few
    epochs: the int8 variants of a barely trained network disagree with it), and the
    config that compresses it."""
    made: dict[str, tuple] = {}

    def make(family: str, *overrides: str):
        if family not in made:
            work = tmp_path_factory.mktemp(f"compress-{family}")
            base = [
                f"data.path={digits_file}", f"paths.root_dir={ROOT}",
                f"paths.output_dir={work / 'out'}", f"paths.mlflow_artifacts_dir={work / 'art'}",
                f"logger.tracking_uri={tracking_uri}", f"registry.model_name=compress-{family}",
                f"paths.payload_dir={work / 'payloads'}",
                *FAST, "~trainer.limit_train_batches", "test=false",
                "compress.measure.repeats=20", "compress.measure.warmup=2",
            ]  # fmt: skip
            train(compose_config([*base, *FAMILIES[family]]))
            made[family] = (f"compress-{family}", base)
        name, base = made[family]
        return name, compose_config([*base, *overrides])

    return make


def probabilities(tracking_uri: str, name: str, version: str, x: np.ndarray) -> np.ndarray:
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    answer = model.predict(x)
    return np.asarray(answer["p"] if isinstance(answer, dict) else answer)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_exports_to_onnx_answering_like_its_torch_graph_with_lineage(
    trained, family: str, tracking_uri: str, digits_file: Path, tmp_path: Path
) -> None:
    name, cfg = trained(family)
    client = MlflowClient(tracking_uri)
    champion = client.get_model_version_by_alias(name, "champion")
    result = compress(cfg, client, name, "@champion")

    onnx_row = result.rows[1]
    assert onnx_row.variant == "onnx" and onnx_row.registered.endswith("@onnx"), onnx_row
    variant = client.get_model_version_by_alias(name, "onnx")
    x = np.load(digits_file)["x_test"]
    for size in (1, 7, 64):  # through the registry: MLflow's onnx flavor against pytorch's
        np.testing.assert_allclose(
            probabilities(tracking_uri, name, variant.version, x[:size]),
            probabilities(tracking_uri, name, champion.version, x[:size]),
            atol=1e-5,
        )
    # as a serving worker runs it (ONNX Runtime on MLflow's folder, no MLflow): the same
    folder = mlflow.artifacts.download_artifacts(f"models:/{name}/{variant.version}",
                                                 dst_path=str(tmp_path))  # fmt: skip
    np.testing.assert_allclose(
        load_onnx_probabilities(folder, threads=1)(x[:64]),
        probabilities(tracking_uri, name, variant.version, x[:64]),
        atol=1e-6,
    )
    tags = variant.tags
    if family == "rnn":  # rebuilt from its run: any sequence length, checked at two more
        assert tags["compress.free_axes"] == "batch, steps (axis 2)"
        assert "steps [4, 11]" in variant.description
        session = onnx_session(onnx_file(Path(folder)))
        for steps in (3, 13):
            rows = np.ascontiguousarray(np.resize(x[:5], (5, 1, steps, 8)), dtype=np.float32)
            assert session.run(None, {"x": rows})[0].shape == (5, 10)
    else:
        assert tags["compress.free_axes"] == "batch"
    assert tags["compress.parent_version"] == str(champion.version)
    assert tags["compress.parent_run_id"] == champion.run_id
    assert tags["compress.method"] == "onnx" and tags["serialization_format"] == "onnx"
    assert int(tags["compress.opset"]) >= 18 and tags["compress.exporter"].startswith("torch.onnx")
    assert tags["compress.onnxruntime"] and tags["data.dvc_md5"] == champion.tags["data.dvc_md5"]
    # monitored against its parent's training reference
    assert tags["monitoring.reference_sha256"] == champion.tags["monitoring.reference_sha256"]
    assert variant.run_id == result.run_id != champion.run_id
    assert float(tags["evaluation.test/acc"]) == pytest.approx(onnx_row.accuracy, abs=1e-6)
    assert tags["compress.worst_recall_drop"].endswith(": 0.0000")  # same answers as torch
    # @champion stays where the gate put it; the move of @onnx is in the alias history
    assert client.get_model_version_by_alias(name, "champion").version == champion.version
    (move,) = [m for m in read_history(client, name) if m.alias == "onnx"]
    assert (move.kind, move.to_version) == ("compress", str(variant.version))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and "onnx/test_acc" in run.data.metrics
    table = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/compression.md")
    assert table.startswith("| variant |") and "| onnx |" in table

    int8 = result.rows[2]
    assert int8.variant == "onnx-int8"
    if family == "rnn":  # ONNX Runtime quantizes the head but not the GRU: not int8
        assert "min_int8_weight_share" in int8.registered, int8
        assert "onnx-int8" not in client.get_registered_model(name).aliases
    else:
        assert int8.registered.endswith("@onnx-int8"), int8
        quantized = client.get_model_version_by_alias(name, "onnx-int8")
        assert "float32" not in quantized.tags["compress.int8_layers"]
        assert int8.size_bytes < onnx_row.size_bytes / 2.5
        assert int8.agreement >= 0.98
        expected = "static" if family == "cnn" else "dynamic"
        assert quantized.tags["compress.int8_mode"] == expected

    again = compress(cfg, client, name, champion.version)  # an alias resolves to the same
    assert again.rows[1].registered == f"v{variant.version} (registered before)"


def test_an_impossible_rule_registers_nothing_and_the_run_says_why(
    trained, tracking_uri: str, capfd
) -> None:
    """Through the command, whose output is the table and the verdicts: none of the
    exporter's progress lines, quantizer notes or library warnings."""
    name, _ = trained("mlp")
    client = MlflowClient(tracking_uri)
    before = registry_state(client, name)
    capfd.readouterr()
    code = main(["compress", name, "--config-dir", str(ROOT / "conf"),
                 f"logger.tracking_uri={tracking_uri}", "compress.rule.max_accuracy_drop=-1",
                 "compress.measure.repeats=20"])  # fmt: skip
    out, err = capfd.readouterr()
    assert code == 0, err
    assert registry_state(client, name)[2] == before[2]
    assert "onnx not registered: accuracy drop" in out and "max_accuracy_drop -1" in out
    assert "onnx-int8 not registered: accuracy drop" in out
    chatter = [line for line in (out + err).splitlines()
               if any(word in line for word in ("torch.onnx", "torchvision", "Warning", "WARNING",
                                                *KNOWN_CHATTER))]  # fmt: skip
    assert not chatter, chatter
    (run,) = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id],
        "tags.`mlops.run_type` = 'compression'",
        order_by=["start_time DESC"],
        max_results=1,
    )
    table = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/compression.md")
    assert "no: accuracy drop" in table and run.info.status == "FINISHED"


def test_evaluate_and_predict_take_an_onnx_version(
    trained, tracking_uri: str, digits_file: Path, tmp_path: Path, capsys
) -> None:
    name, cfg = trained("mlp", "compress.methods=[onnx]")
    client = MlflowClient(tracking_uri)
    compress(cfg, client, name, "@champion")
    variant = client.get_model_version_by_alias(name, "onnx")

    code = main(["evaluate", name, "--version", "@onnx", "--config-dir", str(ROOT / "conf"),
                 f"logger.tracking_uri={tracking_uri}"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    expected_acc = float(variant.tags["evaluation.test/acc"])
    assert "the data version" in out and f"test/acc = {expected_acc:.4f}" in out

    x = np.load(digits_file)["x_test"][:30]
    np.savez(source := tmp_path / "new.npz", x=x)
    result = predict_file(client, name, str(variant.version), source, tmp_path / "out.csv")
    expected = probabilities(tracking_uri, name, variant.version, x).argmax(axis=1)
    assert pd.read_csv(result.output)["predicted_label"].tolist() == expected.tolist()


def test_an_onnx_version_is_served_by_onnx_runtime_without_torch_or_mlflow(
    trained, tracking_uri: str, digits_file: Path, tmp_path: Path
) -> None:
    """The int8 CNN as a Bento over real HTTP: answers as pyfunc loads that version, the
    same validation, and a Bento whose pins and imports hold neither torch nor MLflow."""
    name, cfg = trained("cnn", f"paths.bento_build_dir={tmp_path / 'build'}")
    client = MlflowClient(tracking_uri)
    if "onnx-int8" not in client.get_registered_model(name).aliases:
        compress(cfg, client, name, "@champion")
    version = client.get_model_version_by_alias(name, "onnx-int8")
    deployed = deploy(cfg, name, "@onnx-int8")
    assert deployed.deployment.model_format == "onnx" and deployed.deployment.compiled_for == ()

    bento = bentoml.get(deployed.bento_tag)
    requirements = Path(bento.path_of("env/python/requirements.txt")).read_text().splitlines()
    pinned = {line.split("==")[0] for line in requirements if "==" in line}
    assert "onnxruntime" in pinned and not pinned & {"torch", "mlflow"}, requirements
    assert not any("download.pytorch.org" in line for line in requirements)
    site = pinned_site(requirements, tmp_path / "site-packages")
    assert not (site / "torch").exists() and not (site / "mlflow").exists()
    alone = subprocess.run(
        [sys.executable, "-S", "-c", FROM_THE_BENTO_ALONE], cwd=bento.path_of("src"),
        capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert json.loads(alone.stdout.strip().splitlines()[-1])["answers"] == 2

    x = np.load(digits_file)["x_test"][:24]
    with bentoml.serve(deployed.bento_tag, port=free_port(), host="127.0.0.1") as server:
        bentoml.SyncHTTPClient(server.url, server_ready_timeout=120).close()
        metadata = json.loads(get(server.url, "/metadata")[1])
        assert metadata["model_format"] == "onnx", metadata
        assert metadata["runtime"].startswith("onnxruntime ")
        assert (metadata["model_version"], metadata["alias"]) == (str(version.version), "onnx-int8")
        status, answers = post(server.url, {"inputs": x.tolist()})
        assert status == 200, answers
        expected = probabilities(tracking_uri, name, version.version, x)
        served = np.array([answer["probabilities"] for answer in answers])
        np.testing.assert_allclose(served, expected, atol=1e-6)
        assert [a["label"] for a in answers] == expected.argmax(axis=1).tolist()
        status, reason = post(server.url, {"inputs": [[1.0, 2.0]]})
        assert status == 400 and "send a batch of shape (N, 1, 8, 8)" in reason


@pytest.mark.parametrize(
    "args, message",
    [
        (["no-such-model"], "no registered model 'no-such-model'"),
        (["{name}", "--version", "99"], "99"),
        (["{name}", "compress.methods=[zip]"], "unknown zip; choose from onnx, onnx-int8"),
        (["{name}", "--version", "@onnx"], "is already the onnx variant of version"),
    ],
)
def test_bad_input_is_one_line_and_registers_nothing(
    trained, tracking_uri: str, args: list[str], message: str, capsys
) -> None:
    name, cfg = trained("mlp")
    client = MlflowClient(tracking_uri)
    if "onnx" not in client.get_registered_model(name).aliases:
        compress(cfg, client, name, "@champion")
    before = registry_state(client, name)
    code = main(["compress", *[a.format(name=name) for a in args], "--config-dir",
                 str(ROOT / "conf"), f"logger.tracking_uri={tracking_uri}"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("mlops: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert registry_state(client, name) == before


def test_the_rule_names_each_reason_a_variant_is_refused() -> None:
    parent = Scores({"test/acc": 0.95, "test/recall/3": 0.9})
    rule = CompressionRule(per_class_floor=0.85)
    assert refusals(rule, parent, Scores({"test/acc": 0.945, "test/recall/3": 0.86}, 0.99)) == []
    reasons = refusals(
        rule, parent, Scores({"test/acc": 0.93, "test/recall/3": 0.8}, 0.97, int8_weight_share=0.1)
    )
    assert [r.split(" ")[0] for r in reasons] == ["accuracy", "agreement", "recall", "only"]
    assert "class 3 0.800" in reasons[2]


def test_an_export_that_answers_differently_stops_with_the_run_marked_failed(
    trained, tracking_uri: str
) -> None:
    """A tolerance no export can meet stands in for an exporter bug: nothing is built from
    the export, nothing registered, and the run keeps the reason."""
    from mlops.errors import CompressError

    name, cfg = trained("mlp", "compress.onnx.atol=-1")
    client = MlflowClient(tracking_uri)
    before = registry_state(client, name)
    with pytest.raises(CompressError, match="against the torch graph") as raised:
        compress(cfg, client, name, "@champion")
    assert registry_state(client, name) == before
    (run,) = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id],
        "tags.`mlops.run_type` = 'compression' and attributes.status = 'FAILED'",
    )
    assert run.data.tags["compress.error"] == str(raised.value)
