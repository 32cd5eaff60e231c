"""A service on a network: API keys and HTTPS, on a real server over HTTP(S)."""

from __future__ import annotations

import datetime
import hmac
import http.client
import ipaddress
import json
import os
import ssl
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import bentoml
import numpy as np
import pytest
import yaml

from mlops.cli import main
from mlops.serving.auth import RECHECK_S, ApiKeys, key_hash, new_key, revoke_key
from tests.conftest import ROOT
from tests.servers import free_port, running_server


def call(url: str, path: str, key: str | None = None, body: dict | None = None,
         scheme: str = "Bearer", context: ssl.SSLContext | None = None,
         ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"{scheme} {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_api_keys_guard_every_route_but_the_probes(servers, digits_file: Path) -> None:
    """deploy.auth on: no key, a wrong one, the right one in another scheme, a revoked
    one: 401 naming the scheme; a good key is answered; the probes and /metrics stay open;
    keys added and revoked while the service runs count within a second."""
    served = servers("secured")
    url, keys = served["url"], served["keys_file"]
    body = {"inputs": np.load(digits_file)["x_test"][:1].tolist()}
    for path in ("/livez", "/readyz", "/metrics"):
        assert call(url, path)[0] == 200, path
    status, headers, _ = call(url, "/predict", body=body)
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="mlops"'
    alice = new_key(keys, "alice")
    time.sleep(RECHECK_S + 0.2)  # each worker looks at the file at most once a second
    assert call(url, "/predict", alice, body)[0] == 200
    assert call(url, "/metadata", alice)[0] == 200 and call(url, "/metadata")[0] == 401
    assert call(url, "/predict", alice[:-1] + "x", body)[0] == 401
    assert call(url, "/predict", alice, body, scheme="Basic")[0] == 401
    bob = new_key(keys, "bob")
    revoke_key(keys, "alice")
    time.sleep(RECHECK_S + 0.2)
    assert call(url, "/predict", alice, body)[0] == 401
    assert call(url, "/predict", bob, body)[0] == 200
    assert "alice" not in keys.read_text() and alice not in keys.read_text()
    request = urllib.request.Request(f"{url}/docs.json", headers={"authorization": f"Bearer {bob}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        document = json.loads(response.read())
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    predict = document["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearer": []}] and "401" in predict["responses"]
    with bentoml.SyncHTTPClient(url, token=bob) as client:  # BentoML's client, as documented
        (answer,) = client.predict(inputs=np.asarray(body["inputs"], dtype=np.float32))
    assert len(answer["probabilities"]) == 10


def test_wrong_keys_take_as_long_as_any_and_only_hashes_are_compared(
    tmp_path: Path, monkeypatch
) -> None:
    """No early exit: a wrong key sharing all but its last character with a good one, one
    sharing nothing and an empty one each compare the same number of sha256 digests as a
    good key's first request (never the key itself), and take the same time, measured
    interleaved; a good key's later requests skip the hashing, until the file changes."""
    keys_file = tmp_path / "keys"
    good = [new_key(keys_file, f"client{i}") for i in range(32)]
    guard = ApiKeys(app=None, mode="on", keys_file=str(keys_file))
    offered = {
        "good": good[0],
        "all but the last character": good[0][:-1] + ("x" if good[0][-1] != "x" else "y"),
        "nothing shared": "z" * len(good[0]),
        "empty": "",
    }
    scopes = {name: {"type": "http", "path": "/predict", "server": ("10.0.0.1", 3000),
                     "headers": [(b"authorization", f"Bearer {key}".encode())]}
              for name, key in offered.items()}  # fmt: skip
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest",
                        lambda a, b: compared.append((a, b)) or real_compare(a, b))  # fmt: skip
    for name, scope in scopes.items():
        compared.clear()
        assert guard.valid(scope) == (name == "good"), name
        assert len(compared) == len(good), name
        assert {a for a, _ in compared} == {key_hash(offered[name]).encode()}, name
    compared.clear()
    assert guard.valid(scopes["good"]) and not compared  # remembered
    revoke_key(keys_file, "client0")
    assert guard.valid(scopes["good"])  # until the guard looks at the file again
    time.sleep(RECHECK_S + 0.1)
    compared.clear()
    assert not guard.valid(scopes["good"]) and len(compared) == len(good) - 1
    monkeypatch.setattr(hmac, "compare_digest", real_compare)
    wrong = {name: scope for name, scope in scopes.items() if name != "good"}
    rounds: dict[str, list[float]] = {name: [] for name in wrong}
    for _ in range(60):  # interleaved, so drift of the machine's speed hits each alike
        for name, scope in wrong.items():
            start = time.perf_counter()
            for _ in range(100):
                guard.valid(scope)
            rounds[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(times) for name, times in rounds.items()}
    slowest, fastest = max(medians.values()), min(medians.values())
    assert slowest < 1.3 * fastest, medians


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files: what a test CA would issue."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        ), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return certfile, keyfile


def test_mlops_serve_answers_over_https_with_the_configured_certificate(
    servers, digits_file: Path, tmp_path: Path
) -> None:
    """`mlops serve` (make serve) with deploy.tls: answers HTTPS verified against the
    certificate, API keys still asked; plain HTTP on that port and a client that does not
    trust the certificate get no answer."""
    served = servers.bento("secured")
    certfile, keyfile = self_signed_certificate(tmp_path / "tls")
    key = new_key(served["keys_file"], "tls-client")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(certfile))
    mlops = Path(sys.executable).parent / "mlops"
    command = [str(mlops), "serve", served["deployed"].bento_tag, "--port", str(port),
               "--config-dir", str(ROOT / "conf"), f"deploy.tls.certfile={certfile}",
               f"deploy.tls.keyfile={keyfile}"]  # fmt: skip
    log = tmp_path / "serve.log"
    with running_server(command, f"{url}/readyz", log, context=trusted):
        body = {"inputs": np.load(digits_file)["x_test"][:2].tolist()}
        status, _, answer = call(url, "/predict", key, body, context=trusted)
        assert status == 200 and len(json.loads(answer)) == 2
        assert call(url, "/predict", None, body, context=trusted)[0] == 401
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            call(url, "/livez")  # the system's CAs do not vouch for this certificate
        with pytest.raises((OSError, http.client.HTTPException)):
            call(f"http://127.0.0.1:{port}", "/livez")
    assert f"on https://127.0.0.1:{port}" in log.read_text()


def test_a_tls_setting_that_cannot_work_is_one_line_before_anything_starts(
    tmp_path: Path, capsys
) -> None:
    """A key without its certificate, a missing file, a key of another certificate: one
    line naming the setting; nothing is served."""
    certfile, keyfile = self_signed_certificate(tmp_path / "one")
    other_cert, _ = self_signed_certificate(tmp_path / "other")
    build = tmp_path / "build"
    build.mkdir()
    (build / "LAST_BENTO").write_text("digits-cnn-service:v1\n")
    argv = ["serve", "--config-dir", str(ROOT / "conf"), f"paths.bento_build_dir={build}",
            "--port", str(free_port())]  # fmt: skip
    cases = {
        "deploy.tls.certfile is not set": [f"deploy.tls.keyfile={keyfile}"],
        f"deploy.tls.keyfile={tmp_path / 'gone.pem'}: no such file": [
            f"deploy.tls.certfile={certfile}", f"deploy.tls.keyfile={tmp_path / 'gone.pem'}"],
        "do not load as a certificate and its key": [
            f"deploy.tls.certfile={other_cert}", f"deploy.tls.keyfile={keyfile}"],
    }  # fmt: skip
    for expected, overrides in cases.items():
        assert main([*argv, *overrides]) == 1, expected
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("mlops: error: ") and expected in line, line


def deployment_spec(documents: list[dict]) -> dict:
    return next(d for d in documents if d["kind"] == "Deployment")["spec"]


def test_mlops_k8s_writes_manifests_valid_for_kubernetes_of_the_bento_it_names(
    servers, tmp_path: Path, capsys, monkeypatch
) -> None:
    """`mlops k8s` (make k8s): Deployment of the image make containerize tags, probed on
    /livez and /readyz, resources from deploy.kubernetes, the keys Secret mounted where
    MLOPS_API_KEYS_FILE points, a Service onto the pods' port, and with autoscale an HPA
    in charge of the replicas; every object valid against Kubernetes' own schemas."""
    import kubernetes_validate

    served = servers.bento("secured")
    tag = served["deployed"].bento_tag
    build = tmp_path / "build"
    build.mkdir()
    (build / "LAST_BENTO").write_text(f"{tag}\n")
    monkeypatch.setenv("BENTOML_HOME", os.environ["BENTOML_HOME"])  # restored after the test
    argv = ["k8s", "--config-dir", str(ROOT / "conf"), f"paths.bento_build_dir={build}",
            f"deploy.kubernetes.output_dir={tmp_path / 'k8s'}",
            "deploy.kubernetes.registry=registry.example.com/ml",
            "deploy.kubernetes.memory=3Gi"]  # fmt: skip
    assert main([*argv, "deploy.kubernetes.autoscale.enabled=true"]) == 0
    out = capsys.readouterr().out
    (path,) = (tmp_path / "k8s").glob("*.yaml")
    assert f"{path}: Deployment, Service, HorizontalPodAutoscaler for {tag}" in out
    assert "create secret generic mlops-api-keys --from-file=keys=" in out
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:  # independently of mlops' own check
        kubernetes_validate.validate(document, kubernetes_validate.latest_version(), strict=True)
    deployment, service, autoscaler = documents
    spec = deployment["spec"]
    assert "replicas" not in spec  # the autoscaler's to set
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example.com/ml/{tag}"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "3Gi"}  # 2 workers x 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e["value"] for e in container["env"]}
    (keys,) = [m for m in container["volumeMounts"] if m["name"] == "api-keys"]
    assert env["MLOPS_API_KEYS_FILE"] == f"{keys['mountPath']}/keys"
    assert {"name": "api-keys", "secret": {"secretName": "mlops-api-keys"}} in spec["template"][
        "spec"]["volumes"]  # fmt: skip
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    assert main(argv) == 0  # fixed replicas: no autoscaler
    assert [d["kind"] for d in yaml.safe_load_all(path.read_text())] == ["Deployment", "Service"]
    assert deployment_spec(list(yaml.safe_load_all(path.read_text())))["replicas"] == 2
    capsys.readouterr()
    bad = {"deploy.kubernetes.replicas=two": "Deployment is not valid Kubernetes",
           "deploy.kubernetes.version=0.1": "deploy.kubernetes.version=0.1",
           "deploy.kubernetes.autoscale.max_replicas=1": "min_replicas <= max_replicas",
           }  # fmt: skip
    for override, expected in bad.items():
        extra = ["deploy.kubernetes.autoscale.enabled=true"] if "autoscale" in override else []
        assert main([*argv, override, *extra]) == 1, override
        (line,) = capsys.readouterr().err.splitlines()
        assert expected in line, line


def test_manifests_of_a_bento_without_keys_or_payload_log_mount_neither() -> None:
    """auth off and no payload log: no Secret, no volume; the pods run as BentoML's user."""
    from omegaconf import OmegaConf

    from mlops.serving.deployment import Deployment
    from mlops.serving.kubernetes import BENTO_UID, manifests, object_name
    from tests.conftest import compose_config

    settings = compose_config([]).deploy.kubernetes
    deployment = Deployment(
        bento_model_tag="m:v1", model_name="Digits CNN", model_version="4", alias="champion",
        run_id="r", git_commit="c", data_md5="d", input_shape=(64,), num_classes=10,
        max_batch_size=64, max_latency_ms=1000, max_request_samples=256,
        max_body_bytes=1000, workers=3, torch_threads=2, auth="off", payload_sample_rate=0,
    )  # fmt: skip
    documents = manifests(deployment, "digits-cnn-4f2a.v2_service:v4", OmegaConf.create(settings))
    pod = deployment_spec(documents)["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["volumes"] == [] and container["volumeMounts"] == []
    assert not {"MLOPS_API_KEYS_FILE", "MLOPS_PAYLOAD_DIR"} & {e["name"] for e in container["env"]}
    assert container["resources"]["requests"]["cpu"] == "6"  # 3 workers x 2 threads
    assert documents[0]["metadata"]["name"] == "digits-cnn-4f2a-v2-service"
    assert object_name("3d-model_service") == "mlops-3d-model-service"
    assert pod["securityContext"]["runAsUser"] == BENTO_UID

    from bentoml._internal.container.generate import BENTO_UID_GID  # BentoML's image's user

    assert BENTO_UID == BENTO_UID_GID
