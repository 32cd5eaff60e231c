"""The deployed BentoML service, started for real on a free 127.0.0.1 port, over HTTP."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import bentoml
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from mlops.errors import DeployError, RegistryError
from mlops.quiet import ARTIFACT_PROGRESS_BAR
from mlops.serving.compiled import (
    COMPILED_FILE,
    cpu_flags,
    load_compiled_forward,
    missing_cpu_flags,
    package_forward,
)
from mlops.serving.deploy import bento_name, deploy
from mlops.serving.worker import ClientErrorsInOneLine, log_client_errors_in_one_line
from pipelines.train import train
from tests.conftest import ROOT
from tests.pinned import pinned_distributions
from tests.served import (
    DIGIT_NAMES,
    MAX_BODY,
    PIXELS,
    get,
    metric_sums,
    post,
    predict_with_id,
)
from tests.servers import free_port, stop_group, taken_port


def nan_sample(value: str) -> bytes:
    rows = ",".join(
        ["[" + ",".join([value] + ["0"] * 7) + "]"] + ["[" + ",".join(["0"] * 8) + "]"] * 7
    )
    return ('{"inputs": [[[' + rows + "]]]}").encode()  # shape (1, 1, 8, 8)


BAD_REQUESTS = {
    "wrong shape": (
        {"inputs": [[1.0, 2.0, 3.0]]},
        "shape (1, 3); send a batch of shape (N, 1, 8, 8)",
    ),
    # as many values as one or two samples, in another shape: never reshaped into samples
    "two samples of 32 values": ({"inputs": [[0.5] * 32] * 2}, "shape (2, 32)"),
    "flat values": ({"inputs": [0.5] * 128}, "shape (128,)"),
    "one sample without the batch": ({"inputs": [[[0.5] * 8] * 8]}, "shape (1, 8, 8)"),
    "ragged rows": ({"inputs": [[[[0.5] * 8] * 8], [[[0.5] * 7] * 8]]}, "not an array of numbers"),
    "wrong dtype": ({"inputs": [[[["a"] * 8] * 8]]}, "could not convert"),
    "objects of features, not a CSV model": ({"inputs": [{"p00": 1.0}]}, "trained on a CSV"),
    "NaN": (nan_sample("NaN"), "NaN or inf"),
    "inf": (nan_sample("Infinity"), "NaN or inf"),
    "overflowing": (nan_sample("1e30"), "beyond 1e+15 in magnitude"),
    "empty batch": ({"inputs": []}, "empty batch"),
    "null": ({"inputs": None}, "'inputs' is null, not a batch"),
    "a number": ({"inputs": 5}, "'inputs' is 5, not a batch"),
    "over max samples": (
        {"inputs": np.zeros((257, 1, 8, 8), dtype=int).tolist()},
        "max_request_samples=256",
    ),
    "not JSON": (b"this is not json", "Invalid JSON"),
    "missing field": ({"x": [1]}, "inputs"),
    "oversized body": (b"[" + b"0," * MAX_BODY + b"0]", "max_body_bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_are_4xx_with_a_reason(servers, case: str) -> None:
    served = servers("cnn")
    body, reason = BAD_REQUESTS[case]
    status, message = post(served["url"], body)
    assert 400 <= status < 500, (status, message)
    assert reason in str(message), message
    # as /docs.json documents it: a message, and the detail as a string
    answer = json.loads(message)
    assert isinstance(answer["error"], str) and isinstance(answer.get("detail", ""), str)
    assert post(served["url"], {"inputs": np.zeros((1, 1, 8, 8)).tolist()})[0] == 200  # still up


def test_a_form_encoded_body_is_refused_with_the_header_to_send(servers) -> None:
    served = servers("cnn")
    valid = {"inputs": np.zeros((1, 1, 8, 8)).tolist()}
    status, message = post(served["url"], valid, content_type="application/x-www-form-urlencoded")
    assert status == 415, (status, message)
    assert "Content-Type: application/json" in str(message)
    assert post(served["url"], valid, content_type="text/plain")[0] == 200  # parsed as JSON


def test_concurrent_burst_has_no_errors(servers, digits_file: Path) -> None:
    served = servers("cnn")
    x = np.load(digits_file)["x_test"]

    def client(worker: int) -> list[int]:
        return [post(served["url"], {"inputs": x[(worker + i) % len(x)][None].tolist()})[0]
                for i in range(8)]  # fmt: skip

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = [s for batch in pool.map(client, range(32)) for s in batch]
    assert len(statuses) == 256
    assert statuses.count(200) == 256, sorted(set(statuses))


def test_requests_of_more_samples_than_a_batch_get_their_own_answers_in_order(
    servers, digits_file: Path
) -> None:
    """The adaptive batcher merges requests and splits one of more than max_batch_size (64)
    samples over several forward passes; each answer must still be its request's samples,
    in order, whatever it was merged with."""
    served = servers("cnn")
    x = np.load(digits_file)["x_test"]
    mlflow.set_tracking_uri(served["tracking_uri"])  # another module's test may have moved it
    expected = mlflow.pyfunc.load_model(f"models:/{served['name']}/{served['version']}").predict(x)
    requests = [(start, size) for size in (1, 200, 3, 64, 130, 7, 256, 65) for start in (0, 9)]

    def answer(request: tuple[int, int]) -> np.ndarray:
        start, size = request
        status, predictions = post(served["url"], {"inputs": x[start : start + size].tolist()})
        assert status == 200, predictions
        return np.array([p["probabilities"] for p in predictions])

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(answer, requests))
    for (start, size), probabilities in zip(requests, answers, strict=True):
        np.testing.assert_allclose(probabilities, expected[start : start + size], atol=1e-5)


def test_keep_alive_connections_are_recycled_without_errors(servers) -> None:
    """Every 100th response of a worker says `Connection: close` (deploy.reconnect_every),
    so a client's reconnects can spread over the workers; its next request just reconnects.
    200 requests on one client connection give each worker's count at least one multiple of
    100 between them, and at most two per worker."""
    served = servers("cnn")
    host, port = served["url"].removeprefix("http://").split(":")
    body = json.dumps({"inputs": np.zeros((1, 1, 8, 8)).tolist()})
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    statuses, closes = [], 0
    try:
        for _ in range(200):
            connection.request("POST", "/predict", body, {"content-type": "application/json"})
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            closes += response.getheader("connection", "").lower() == "close"
    finally:
        connection.close()
    assert statuses == [200] * 200
    assert 1 <= closes <= 4, closes


def test_deploy_refuses_a_negative_reconnect_count(make_cfg) -> None:
    with pytest.raises(DeployError, match=r"deploy.reconnect_every=-1: use a number"):
        deploy(make_cfg("deploy.reconnect_every=-1"), "any-model", "@champion")


def test_bentomls_own_client_reads_the_answers(servers, digits_file: Path) -> None:
    """The service's declared output type is what BentoML's client decodes answers with."""
    served = servers("cnn")
    x = np.load(digits_file)["x_test"][:3]
    with bentoml.SyncHTTPClient(served["url"]) as client:
        answers = client.predict(inputs=x)
    status, expected = post(served["url"], {"inputs": x.tolist()})
    assert status == 200
    assert answers == expected


# run in the Bento's own folder by an interpreter that sees only the standard library and
# the packages a fresh environment with the Bento's pins would hold: not this checkout
FROM_THE_BENTO_ALONE = """
import asyncio, json
import numpy as np
import mlops, service
from mlops.serving.service import SERVED
worker = service.ClassifierService()
answer = asyncio.run(worker.predict(np.zeros((2, 1, 8, 8), np.float32)))
print(json.dumps({"mlops": mlops.__file__, "answers": len(answer),
                  "compiled": SERVED["compiled_forward"]}))
"""


def pinned_site(requirements: list[str], folder: Path) -> Path:
    """A site-packages holding only what `pip install` of these pins brings (links into this
    environment's: their modules and metadata)."""
    folder.mkdir()
    for installed in pinned_distributions(requirements):
        site = Path(installed.locate_file(""))
        for top in {Path(file).parts[0] for file in installed.files or []} - {".."}:
            with contextlib.suppress(FileExistsError):
                (folder / top).symlink_to(site / top)
    return folder


def test_the_bento_carries_the_code_it_serves_and_pins_what_it_imports(
    servers, tmp_path: Path
) -> None:
    """A Bento exported, containerized or served away from this checkout has its own copy
    of the mlops code and its pinned requirements, nothing else: with only those on the
    import path, its service loads the model from its own code and answers."""
    bento = bentoml.get(servers("cnn")["deployed"].bento_tag)
    src = Path(bento.path_of("src"))
    requirements = Path(bento.path_of("env/python/requirements.txt")).read_text().splitlines()
    site = pinned_site(requirements, tmp_path / "site-packages")
    assert not (site / "lightning").exists() and not (site / "hydra").exists()
    run = subprocess.run(
        [sys.executable, "-S", "-c", FROM_THE_BENTO_ALONE],
        cwd=src, capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(loaded["mlops"]).is_relative_to(src) and loaded["answers"] == 2
    assert loaded["compiled"] is True  # its compiled forward pass needs nothing more
    # a local torch build (+cpu) resolves only with its PyTorch index, for pip and uv alike
    _, _, build = version("torch").partition("+")
    if build:
        assert f"--extra-index-url https://download.pytorch.org/whl/{build}" in requirements
        assert ("UV_INDEX_STRATEGY", "unsafe-best-match") in {
            (env.name, env.value) for env in bento.info.envs
        }


def check_predictions_equal_mlflow_pyfunc(served: dict, digits_file: Path) -> None:
    x = np.load(digits_file)["x_test"][:24]
    status, predictions = post(served["url"], {"inputs": x.tolist()})
    assert status == 200, predictions
    mlflow.set_tracking_uri(served["tracking_uri"])  # another module's test may have moved it
    expected = mlflow.pyfunc.load_model(f"models:/{served['name']}/{served['version']}").predict(x)
    served_probabilities = np.array([p["probabilities"] for p in predictions])
    np.testing.assert_allclose(served_probabilities, expected, rtol=1e-5, atol=1e-6)
    assert [p["label"] for p in predictions] == expected.argmax(axis=1).tolist()


def openapi_inputs(served: dict) -> dict:
    document = json.loads(get(served["url"], "/docs.json")[1])
    body = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    return body["schema"]["properties"]["inputs"]


def check_metadata_health_and_metrics(served: dict) -> None:
    status, body = get(served["url"], "/metadata")
    metadata = json.loads(body)
    assert status == 200
    assert metadata["model_name"] == served["name"]
    assert metadata["model_version"] == served["version"]
    assert metadata["alias"] == "champion"
    assert metadata["run_id"] == served["run_id"]
    assert metadata["data_md5"].endswith(".dir")
    assert metadata["data_matches_pin"] == "unknown"  # trained on a copy outside the project
    assert metadata["compiled_forward"] is bool(served["deployed"].deployment.compiled_for)
    assert get(served["url"], "/livez")[0] == 200
    answer = json.loads(get(served["url"], "/docs.json")[1])["paths"]["/predict"]["post"]
    # the OpenAPI page gives the sample shape and an example request the service takes
    inputs = openapi_inputs(served)
    assert [inputs["items"]["minItems"], inputs["items"]["items"]["maxItems"]] == [1, 8]
    assert inputs["maxItems"] == 256 and "(1, 8, 8)" in inputs["description"]
    status, answers = post(served["url"], {"inputs": inputs["example"]})
    assert status == 200 and len(answers) == 2, answers
    assert answer["responses"]["200"]["content"] == {
        "application/json": {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}
        }
    }
    assert get(served["url"], "/readyz")[0] == 200
    post(served["url"], {"inputs": np.zeros((3, 1, 8, 8)).tolist()})
    _, metrics = get(served["url"], "/metrics")
    labels = (f'alias="champion",model_name="{served["name"]}",'
              f'model_version="{served["version"]}",run_id="{served["run_id"]}"')  # fmt: skip
    assert f"mlops_model_info{{{labels}}} 1.0" in metrics
    assert "mlops_batch_size_count" in metrics
    assert 'bentoml_service_request_total{endpoint="/predict",http_response_code="200"' in metrics
    assert "bentoml_service_request_duration_seconds_bucket" in metrics


def test_the_deployed_cnn_serves_its_graph_compiled_for_this_cpu(servers) -> None:
    """`make deploy` compiles the version's graph (deploy.compile, on by default) into the
    Bento; the service runs it (its answers are checked against MLflow's in
    test_served_version_predicts_like_mlflow_and_reports_itself) and says so."""
    deployed = servers("cnn")["deployed"]
    bento = Path(bentoml.bentos.get(deployed.bento_tag).path) / "src"
    assert (bento / COMPILED_FILE).stat().st_size > 0
    assert set(deployed.deployment.compiled_for) <= set(cpu_flags())
    assert "avx2" in deployed.deployment.compiled_for  # what the kernel lists, not empty
    assert json.loads(get(servers("cnn")["url"], "/metadata")[1])["compiled_forward"] is True


def test_loading_the_compiled_forward_pass_leaves_nothing_in_the_temp_folder(servers) -> None:
    """A worker is stopped, not destroyed: whatever AOTInductor unpacked to load the code
    would stay in /tmp for good, so nothing unpacked may outlive the load."""
    import torch

    bento = Path(bentoml.bentos.get(servers("cnn")["deployed"].bento_tag).path) / "src"
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("aotinductor_*"))
    forward = package_forward(bento / COMPILED_FILE)
    assert set(temp.glob("aotinductor_*")) - before == set()
    sample = torch.zeros(3, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    assert forward(sample).shape == (3, 10)  # still runs with its unpacked files gone


@pytest.mark.parametrize("family", ["cnn", "mlp", "rnn"])  # cnn is up: its tests come first
def test_served_version_predicts_like_mlflow_and_reports_itself(
    servers, family: str, digits_file: Path
) -> None:
    served = servers(family)
    check_predictions_equal_mlflow_pyfunc(served, digits_file)
    check_metadata_health_and_metrics(served)


def test_a_model_trained_on_named_labels_answers_with_the_names(servers, digits_file: Path) -> None:
    """Labels other than 0..C-1 are numbered in sorted order for training; the registered
    model carries them, and the service answers with the data's own labels."""
    served = servers("named")
    x = np.load(digits_file)["x_test"][:24].reshape(24, 64)
    status, predictions = post(served["url"], {"inputs": x.tolist()})
    assert status == 200, predictions
    mlflow.set_tracking_uri(served["tracking_uri"])  # another module's test may have moved it
    expected = mlflow.pyfunc.load_model(f"models:/{served['name']}/{served['version']}").predict(x)
    classes = sorted(DIGIT_NAMES)
    assert [p["label"] for p in predictions] == [classes[i] for i in expected.argmax(axis=1)]
    assert json.loads(get(served["url"], "/metadata")[1])["classes"] == classes
    schema = json.loads(get(served["url"], "/docs.json")[1])["components"]["schemas"]
    assert schema["Prediction"]["properties"]["label"]["type"] == "string"
    # a shuffled mapping would be right 1 time in 10; 2 epochs get most right
    named = np.load(digits_file)["y_test"][:24]
    right = [p["label"] == DIGIT_NAMES[y] for p, y in zip(predictions, named, strict=True)]
    assert np.mean(right) > 0.5, right
    # /metrics counts the answered labels, every class from the start (this server's only
    # predictions are the 24 above)
    counted = {
        line.split('"')[1]: float(line.split()[-1])
        for line in get(served["url"], "/metrics")[1].splitlines()
        if line.startswith("mlops_predictions_total{")
    }
    answered = [p["label"] for p in predictions]
    assert counted == {label: float(answered.count(label)) for label in classes}


def test_a_csv_trained_model_takes_samples_as_objects_of_named_features(
    servers, digits_file: Path
) -> None:
    """`{"inputs": [{"p00": 0.0, ...}]}`: the features by name, in any order, other keys
    not read; the same answers as the samples sent as rows."""
    served = servers("named")
    x = np.load(digits_file)["x_test"][:5].reshape(5, 64)
    records = [{"id": n, **dict(zip(PIXELS[::-1], row[::-1].tolist(), strict=True))}
               for n, row in enumerate(x)]  # fmt: skip
    status, by_name = post(served["url"], {"inputs": records})
    assert status == 200, by_name
    assert by_name == post(served["url"], {"inputs": x.tolist()})[1]
    assert json.loads(get(served["url"], "/metadata")[1])["features"] == PIXELS
    # the OpenAPI page offers both forms, its example by name (two test samples)
    inputs = openapi_inputs(served)
    rows, named = inputs["oneOf"]
    assert named["items"]["required"] == PIXELS and rows["items"]["minItems"] == 64
    example = inputs["example"]
    assert len(example) == 2 and set(example[0]) == set(PIXELS)
    status, answers = post(served["url"], {"inputs": example})
    assert status == 200 and len(answers) == 2, answers

    del records[3]["p17"]
    status, message = post(served["url"], {"inputs": records})
    assert status == 400 and "sample 3 has no feature 'p17'" in str(message), message


def test_compiled_code_that_cannot_run_here_is_left_for_the_graph(tmp_path: Path) -> None:
    """A Bento compiled on a CPU with an instruction this one lacks, or whose compiled file
    does not load: None (the service then runs the exported graph), and the server's log
    says why."""
    import logging

    assert missing_cpu_flags(cpu_flags()) == ()
    assert missing_cpu_flags(("avx2", "avx10_9", "sse2")) == ("avx10_9",)
    broken = tmp_path / COMPILED_FILE
    broken.write_bytes(b"not a package")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("bentoml").addHandler(handler)
    try:
        assert load_compiled_forward(broken, (*cpu_flags(), "avx10_9")) is None
        assert load_compiled_forward(broken, cpu_flags()) is None
    finally:
        logging.getLogger("bentoml").removeHandler(handler)
    assert "this CPU lacks avx10_9" in records[0] and "serving the exported graph" in records[0]
    assert "does not load here" in records[1] and "serving the exported graph" in records[1]


def test_a_forward_pass_that_does_not_compile_leaves_a_bento_of_the_graph(make_cfg, capsys) -> None:
    """No C++ compiler (here: one that always fails): a warning with the reason, and a Bento
    that serves the exported graph, as with deploy.compile=false."""
    import torch._inductor.config as inductor

    cfg = make_cfg("model=mlp", "registry.model_name=no-compiler", "deploy.compile=true")
    train(cfg)
    capsys.readouterr()
    with (
        inductor.patch({"cpp.cxx": (None, "/bin/false"), "force_disable_caches": True}),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        deployed = deploy(cfg, "no-compiler", "1")
    assert not [w for w in caught if "LeafSpec" in str(w.message)]  # torch's, while compiling
    warning = capsys.readouterr().err
    assert "deploy.compile: AOTInductor could not compile it" in warning, warning
    assert "serves the exported graph" in warning and "deploy.compile=false" in warning
    assert deployed.deployment.compiled_for == ()
    assert not (Path(bentoml.bentos.get(deployed.bento_tag).path) / "src" / COMPILED_FILE).exists()


def test_a_pickled_version_is_deployed_without_compiling(make_cfg, capfd, monkeypatch) -> None:
    """...and says so in the one line the deploy prints: BentoML's import and build logs
    stay off the console."""
    monkeypatch.setenv(ARTIFACT_PROGRESS_BAR, "false")  # as `mlops deploy` sets it by default
    cfg = make_cfg("model=mlp", "registry.model_name=pickled", "deploy.compile=true",
                   "registry.serialization_format=pickle")  # fmt: skip
    train(cfg)
    capfd.readouterr()
    deployed = deploy(cfg, "pickled", "1")
    out, err = capfd.readouterr()
    assert out.splitlines() == [
        "deploy.compile: pickled:v1 is a pickle-format model (only exported graphs compile); "
        "served as it is"
    ]
    assert err == ""
    assert deployed.deployment.compiled_for == ()


def test_a_client_error_is_logged_in_one_line_and_a_server_error_keeps_its_traceback() -> None:
    """As BentoML logs a request's exception (`log_exception`): a request that fails
    validation becomes one warning with its reason, an error of the server stays an error."""
    import logging

    from pydantic import BaseModel

    class Body(BaseModel):
        inputs: list[float]

    logger = logging.getLogger("bentoml._internal.server.http_app")
    log_client_errors_in_one_line()
    log_client_errors_in_one_line()  # each worker's __init__ calls it
    assert sum(isinstance(f, ClientErrorsInOneLine) for f in logger.filters) == 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        for fail in (lambda: Body(inputs="x"), lambda: 1 / 0):
            try:
                fail()
            except Exception:
                logger.error("Exception on %s [%s]", "/predict", "POST", exc_info=True)
    finally:
        logger.removeHandler(handler)
    client, server = records
    assert client.levelname == "WARNING" and client.exc_info is None
    assert client.getMessage() == (
        "client error on /predict [POST] (answered 4xx): Input should be a valid list"
    )
    assert server.levelname == "ERROR" and server.exc_info[0] is ZeroDivisionError


def test_deploying_an_unknown_model_version_or_alias_builds_nothing(
    make_cfg, tracking_uri: str
) -> None:
    cfg = make_cfg()
    name = "deploy-errors"
    train(make_cfg("model=mlp", f"registry.model_name={name}"))
    before = {str(b.tag) for b in bentoml.bentos.list()}
    for model, ref, message in [("nope", "@champion", "no registered model 'nope'"),
                                (name, "7", "has no version 7"),
                                (name, "@gold", "has no alias 'gold'")]:  # fmt: skip
        with pytest.raises(RegistryError, match=message):
            deploy(cfg, model, ref)
    assert {str(b.tag) for b in bentoml.bentos.list()} == before
    assert str(MlflowClient(tracking_uri).get_registered_model(name).aliases["champion"]) == "1"


def test_deploying_a_version_the_service_cannot_serve_builds_nothing(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    """A pyfunc-only model, and a PyTorch model without the signature that gives the
    service its input shape: refused with the reason, before anything is imported."""
    import torch

    class Constant(mlflow.pyfunc.PythonModel):  # a valid pyfunc model, no pytorch flavor
        def predict(
            self, context, model_input: list[list[float]], params=None
        ) -> list[list[float]]:
            return [[0.0] * 10 for _ in model_input]

    mlflow.set_tracking_uri(tracking_uri)
    # an experiment of its own: the default one keeps artifacts in ./mlruns, the project
    experiment = MlflowClient(tracking_uri).create_experiment(
        "unservable", artifact_location=str(tmp_path / "artifacts")
    )
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(name="model", python_model=Constant(),
                                registered_model_name="not-pytorch")  # fmt: skip
        mlflow.pytorch.log_model(torch.nn.Linear(64, 10), name="net",
                                 serialization_format="pickle",
                                 registered_model_name="no-signature")  # fmt: skip
    before = {str(b.tag) for b in bentoml.bentos.list()}
    models_before = {str(m.tag) for m in bentoml.models.list()}
    for name, message in [("not-pytorch", "not pytorch or onnx"), ("no-signature", "signature")]:
        with pytest.raises(DeployError, match=message):
            deploy(make_cfg(), name, "1")
    assert {str(b.tag) for b in bentoml.bentos.list()} == before
    assert {str(m.tag) for m in bentoml.models.list()} == models_before


NAMES = ["digits-cnn", "Digits-CNN", "Digits CNN", "digits cnn", "-x-", "ü", "a" * 100, "a" * 99]


def test_every_registered_name_gets_its_own_valid_bentoml_name() -> None:
    assert bento_name("digits-cnn") == "digits-cnn"  # valid names stay as they are
    names = [bento_name(name) for name in NAMES]
    assert len(set(names)) == len(NAMES)  # BentoML lowercases: Digits-CNN != digits-cnn
    for name in names:
        assert name == name.lower()
        bentoml.Tag(f"{name}-service", "v1")  # raises on an invalid or too long name


def test_names_that_differ_only_in_case_deploy_to_their_own_models(
    make_cfg, tracking_uri: str
) -> None:
    cfg = make_cfg("model=mlp", "registry.model_name=Case-Check", "registry.gate.enabled=false")
    result = train(cfg)
    source = MlflowClient(tracking_uri).get_model_version("Case-Check", result.model_version)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.register_model(source.source, "case-check")  # same weights, another model

    deployed = {name: deploy(cfg, name, "1") for name in ("Case-Check", "case-check")}
    assert deployed["case-check"].bento_model_tag == "case-check:v1"
    assert deployed["Case-Check"].bento_model_tag != "case-check:v1"
    for name, result in deployed.items():
        stored = bentoml.models.get(result.bento_model_tag)
        assert stored.info.labels["registered_model"] == name
        assert bentoml.bentos.get(result.bento_tag).info.labels["registered_model"] == name


def test_a_version_number_reused_by_a_new_registration_deploys_its_own_weights(
    make_cfg, tracking_uri: str
) -> None:
    """A registered model deleted and registered again numbers its versions from 1 again
    (so does a recreated tracking store): deploying v1 must not reuse the first v1's import."""
    cfg = make_cfg("model=mlp", "registry.model_name=renumbered", "registry.gate.enabled=false")
    first = train(cfg)
    deploy(cfg, "renumbered", "1")
    MlflowClient(tracking_uri).delete_registered_model("renumbered")
    second = train(make_cfg("model=mlp", "registry.model_name=renumbered", "seed=7"))
    assert second.model_version == "1" and second.run_id != first.run_id

    client = MlflowClient(tracking_uri)  # as if trained on data that differs from its pin
    client.set_model_version_tag("renumbered", "1", "data.matches_pin", "false")
    deployed = deploy(cfg, "renumbered", "1")
    assert bentoml.models.get(deployed.bento_model_tag).info.labels["run_id"] == second.run_id
    assert deployed.deployment.run_id == second.run_id
    assert deployed.deployment.public_metadata()["data_matches_pin"] == "false"  # /metadata


def test_the_bentoml_model_folder_name_is_bentomls_own() -> None:
    """An ONNX Bento finds the MLflow model without importing bentoml.mlflow (which needs
    MLflow): by the folder name BentoML uses, checked here against BentoML's own."""
    import bentoml.mlflow

    from mlops.serving.deployment import MLFLOW_MODEL_FOLDER

    assert bentoml.mlflow.MLFLOW_MODEL_FOLDER == MLFLOW_MODEL_FOLDER


def test_mlops_serve_names_what_is_missing_or_taken_before_starting(tmp_path: Path, capsys) -> None:
    """`mlops serve` (what `make serve` runs): no Bento deployed yet, or a taken port, is
    one line naming the fix; nothing is started."""

    from mlops.cli import main

    build = tmp_path / "build"
    argv = ["serve", "--config-dir", str(ROOT / "conf"), f"paths.bento_build_dir={build}"]
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mlops: error: no Bento yet") and "make deploy" in line
    build.mkdir()
    (build / "LAST_BENTO").write_text("digits-cnn-service:v1\n")
    with taken_port() as port:
        assert main([*argv, "--port", str(port)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert f"port {port} on 127.0.0.1 is taken" in line and f"--port {port + 1}" in line


def test_served_inputs_are_counted_against_the_versions_reference(
    servers, digits_file: Path
) -> None:
    """Every sample lands in one bin of each principal component and one confidence
    bucket; the reference's shares are there to compare with; brightened digits fall
    outside the training range where test digits seldom do."""
    served = servers("cnn")
    url = served["url"]
    assert json.loads(get(url, "/metadata")[1])["monitoring"] is True
    x = np.load(digits_file)["x_test"][:40]
    features = lambda: metric_sums(url, "mlops_input_bin_total", "feature")  # noqa: E731
    buckets = lambda: sum(metric_sums(url, "mlops_confidence_bucket_total", "bucket").values())  # noqa: E731
    outside = lambda: metric_sums(url, "mlops_input_out_of_range_total", "feature")  # noqa: E731
    before, answered, out = features(), buckets(), outside()
    assert post(url, {"inputs": x.tolist()})[0] == 200
    after = features()
    assert sorted(after) == ["pc1", "pc2", "pc3", "pc4"]
    assert all(after[pc] - before.get(pc, 0.0) == 40 for pc in after)
    assert buckets() - answered == 40
    in_range = sum(outside().values()) - sum(out.values())
    assert in_range < 16  # of 160 values: 40 samples, 4 components
    reference = metric_sums(url, "mlops_reference_share", "feature")
    assert reference == pytest.approx({pc: 1.0 for pc in after})
    assert post(url, {"inputs": (x * 4).tolist()})[0] == 200
    assert sum(outside().values()) - sum(out.values()) - in_range > 80
    # what monitoring/prometheus/rules.yml reads is on this /metrics
    from tests.test_prometheus_rules import rules_metric_names

    exported = get(url, "/metrics")[1]
    missing = {name for name in rules_metric_names()
               if f"\n{name}{{" not in exported and f"\n{name} " not in exported}  # fmt: skip
    assert not missing, missing


def test_fed_back_labels_count_each_answer_right_or_wrong_per_class(
    servers, digits_file: Path
) -> None:
    """Delayed labels over HTTP: 30 answers, the true label sent back for each (every
    fifth one said to be another digit); ids this version never issued are counted
    apart; requests that are not feedback are 400, never 5xx."""
    served = servers("cnn")
    url = served["url"]
    x = np.load(digits_file)["x_test"][:30]
    answers, ids = [], []
    for start in (0, 1, 11):  # requests of 1, 10 and 19 samples
        answer, request_id = predict_with_id(url, x[start : {0: 1, 1: 11, 11: 30}[start]])
        answers += answer
        ids += [(request_id, index) for index in range(len(answer))]
    assert len({request_id for request_id, _ in ids}) == 3
    predicted = [answer["label"] for answer in answers]
    truth = [(p + 1) % 10 if i % 5 == 0 else p for i, p in enumerate(predicted)]
    items = [{"request_id": rid, "index": index, "label": label}
             for (rid, index), label in zip(ids, truth, strict=True)]  # fmt: skip
    before = metric_sums(url, "mlops_feedback_total", "outcome")
    status, count = post(url, {"items": items}, "/feedback")
    assert status == 200, count
    assert count == {"received": 30, "matched": 30, "correct": 24, "unknown": 0, "expired": 0}
    after = metric_sums(url, "mlops_feedback_total", "outcome")
    assert after["correct"] - before.get("correct", 0) == 24
    assert after["wrong"] - before.get("wrong", 0) == 6

    first_id = ids[0][0]
    strangers = [{"request_id": first_id, "index": 1, "label": 0},  # the answer had one sample
                 {"request_id": first_id[:-1] + "x", "label": 0},
                 {"request_id": "made-up", "label": 0}]  # fmt: skip
    unmatched = metric_sums(url, "mlops_feedback_unmatched_total", "reason")
    status, count = post(url, {"items": strangers}, "/feedback")
    assert status == 200 and count["matched"] == 0 and count["unknown"] == 3, count
    assert metric_sums(url, "mlops_feedback_unmatched_total", "reason")["unknown"] == (
        unmatched["unknown"] + 3
    )
    bad = {
        "unknown label": ({"items": [{"request_id": first_id, "label": 10}]}, "not one of the"),
        "no label": ({"items": [{"request_id": first_id}]}, "label"),
        "negative index": ({"items": [{"request_id": first_id, "index": -1, "label": 1}]}, "index"),
        "no items": ({"items": []}, "items"),
        "not a list": ({"items": 5}, "items"),
        "null": (b"null", "should be an object"),
        "not JSON": (b"{", "Invalid JSON"),
    }
    for case, (body, reason) in bad.items():
        status, message = post(url, body, "/feedback")
        assert status == 400 and reason in str(message), (case, status, message)
    assert metric_sums(url, "mlops_feedback_total", "outcome") == after  # none of it counted


def test_requests_generated_from_the_openapi_document_get_documented_answers(
    servers, tmp_path: Path
) -> None:
    """Schemathesis against the service's own /docs.json, every operation, its examples,
    coverage and fuzzing phases (bounded, seeded): no 5xx, every status code, content type,
    header and body as documented, schema-valid requests accepted. Not checked: that every
    schema-violating request is refused (JSON booleans are read as 1 and 0)."""
    served = servers("cnn")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    # a schema-valid body may still be over max_body_bytes: answered 413, as documented
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.positive_data_acceptance]\nexpected-statuses = ["2xx", "413"]\n')
    job = subprocess.run(
        [str(schemathesis), "--config-file", str(config), "run", f"{served['url']}/docs.json",
         "--checks", "all",
         "--exclude-checks", "negative_data_rejection", "--phases", "examples,coverage,fuzzing",
         "--max-examples", "25", "--seed", "1", "--workers", "2", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    failures = [
        line for line in job.stdout.splitlines() if line.startswith(("- ST", "  ❌", "[", "_"))
    ]
    assert job.returncode == 0, "\n".join(failures)[-6000:]
    assert "Tested: 6" in job.stdout, job.stdout[-3000:]


def test_a_bento_whose_model_file_changed_is_never_served(make_cfg, tmp_path: Path) -> None:
    """One byte of the served model's weights flipped after the deploy: each worker refuses
    to load them, naming the file, and the server never reports ready."""
    cfg = make_cfg("model=mlp", "registry.model_name=tampered")
    train(cfg)
    deployed = deploy(cfg, "tampered", "1")
    stored = Path(bentoml.models.get(deployed.bento_model_tag).path)  # the Bento's model
    weights = max((p for p in stored.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    port, log = free_port(), tmp_path / "server.log"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", deployed.bento_tag,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                return answer.status == 200
        except OSError:  # refused, 503, or no answer: no worker took the connection
            return False

    try:
        deadline = time.monotonic() + 60
        while "changed since make deploy" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert not ready()
            time.sleep(0.5)
        assert not ready()
    finally:
        stop_group(process)
    assert f"/{weights.name} changed since make deploy" in log.read_text()


def test_a_killed_worker_is_replaced_under_load_and_no_request_hangs(
    servers, digits_file: Path
) -> None:
    """kill -9 of one of the two workers while 8 clients send requests: BentoML starts
    another, the other worker answers meanwhile, the requests the dead one held fail
    (counted, a few) rather than hang, and every request after the replacement succeeds."""
    import psutil

    served = servers("cnn")
    tag = served["deployed"].bento_tag

    def workers() -> list[psutil.Process]:
        """The server's worker processes (bentoml.serve supervises them from this one)."""
        found = []
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = " ".join(child.cmdline())
                if "worker.service" in line and f" {tag} " in line:
                    found.append(child)
        return found

    before = workers()
    assert len(before) == 2, before
    body = {"inputs": np.load(digits_file)["x_test"][:1].tolist()}
    stop = time.monotonic() + 8
    killed_at: list[float] = []

    def client(_: int) -> list[tuple[float, int]]:
        answers = []
        while time.monotonic() < stop:
            try:
                status = post(served["url"], body)[0]
            except (OSError, http.client.HTTPException):  # reset or cut by the killed worker
                status = -1
            answers.append((time.monotonic(), status))
        return answers

    with ThreadPoolExecutor(max_workers=9) as pool:
        sent = [pool.submit(client, n) for n in range(8)]
        time.sleep(1.5)
        before[0].kill()
        killed_at.append(time.monotonic())
        answers = sorted(a for future in sent for a in future.result(timeout=60))
    failed = [t for t, status in answers if status != 200]
    assert len(answers) > 100 and len(failed) <= 16, (len(answers), len(failed))
    deadline = time.monotonic() + 20
    while len(workers()) < 2 or before[0].pid in {w.pid for w in workers()}:
        assert time.monotonic() < deadline, "no worker replaced the killed one"
        time.sleep(0.5)
    assert all(post(served["url"], body)[0] == 200 for _ in range(20))
    assert not [t for t in failed if t > killed_at[0] + 10]  # none after the replacement
