"""Deployed services for tests (the `servers` fixture): each model family is trained and
deployed once per test module, and served (one server at a time) over HTTP."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.servers import free_port

FAMILIES = {
    "mlp": ["model=mlp"],
    "cnn": ["model=cnn", "deploy.compile=true"],  # as `make deploy` builds it
    "rnn": ["model=rnn", "model.cell=lstm"],
    # the digits as a CSV: 64 pixel columns and each label written as its English name
    "named": ["model=mlp", "data=files", "data.name=named", "data.label_column=digit"],
    # API keys required even on 127.0.0.1 (auth.mode=auto would leave it open)
    "secured": ["model=mlp", "deploy.auth.mode=on"],
}
DIGIT_NAMES = np.array(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
)
PIXELS = [f"p{i:02d}" for i in range(64)]
MAX_BODY = 200_000


def digits_with_names(digits_file: Path, folder: Path) -> Path:
    """The digits as a CSV: a column per pixel and the label as the digit's name."""
    import pandas as pd

    arrays = np.load(digits_file)
    x = np.concatenate([arrays[k] for k in ("x", "x_val", "x_test")]).reshape(-1, 64)
    y = np.concatenate([arrays[k] for k in ("y", "y_val", "y_test")])
    path = folder / "named.csv"
    pd.DataFrame(x, columns=PIXELS).assign(digit=DIGIT_NAMES[y]).to_csv(path, index=False)
    return path


class Servers(contextlib.ExitStack):
    """`servers(family)`: a running service of that family's champion, as a dict of its
    url, model name, version, run id and deploy result. Switching family stops the
    previous server (servers sharing a BENTOML_HOME share its Prometheus directory) but
    keeps its Bento, so coming back costs a start, not a training."""

    def __init__(
        self, tmp_path_factory: pytest.TempPathFactory, digits_file: Path, tracking_uri: str,
        prefix: str = "serve",
    ) -> None:  # fmt: skip
        super().__init__()
        self.prefix = prefix  # of the registered names: one per test module
        self.tmp_path_factory, self.digits_file = tmp_path_factory, digits_file
        self.tracking_uri = tracking_uri
        self.deployed: dict[str, dict] = {}
        self.running: tuple[str, dict] | None = None

    def __call__(self, family: str) -> dict:
        import bentoml

        if self.running and self.running[0] == family:
            return self.running[1]
        self.close()
        self.running = None
        served = self.bento(family)
        server = self.enter_context(
            bentoml.serve(served["deployed"].bento_tag, port=free_port(), host="127.0.0.1")
        )
        ready_within(f"{server.url}/readyz", 120)
        served = {**served, "url": server.url}
        self.running = (family, served)
        return served

    def bento(self, family: str) -> dict:
        """That family's champion deployed (trained and built once per module), not served."""
        self.deployed[family] = dict(self.deployed.get(family) or self.deploy(family))
        return self.deployed[family]

    def deploy(self, family: str) -> dict:
        from mlops.serving.deploy import deploy
        from pipelines.train import train
        from tests.conftest import FAST, ROOT, compose_config

        name = f"{self.prefix}-{family}"
        work = self.tmp_path_factory.mktemp(name)
        data = digits_with_names(self.digits_file, work) if family == "named" else self.digits_file
        cfg = compose_config([
            f"data.path={data}", f"paths.root_dir={ROOT}",
            f"paths.output_dir={work / 'out'}",
            f"paths.mlflow_artifacts_dir={work / 'mlartifacts'}",
            f"paths.bento_build_dir={work / 'build'}",
            f"logger.tracking_uri={self.tracking_uri}", f"registry.model_name={name}",
            f"deploy.max_body_bytes={MAX_BODY}", f"paths.payload_dir={work / 'payloads'}",
            "deploy.payload_sample_rate=1.0", f"deploy.auth.keys_file={work / 'keys'}",
            *FAST, *FAMILIES[family],
        ])  # fmt: skip
        train(cfg)
        deployed = deploy(cfg, name, "@champion")
        served = deployed.deployment  # the champion: the training's version, or an earlier one
        return {"name": name, "version": served.model_version, "run_id": served.run_id,
                "deployed": deployed, "tracking_uri": self.tracking_uri,
                "payload_dir": work / "payloads", "keys_file": work / "keys"}  # fmt: skip


def ready_within(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as answer:
            if answer.status == 200:
                return
        assert time.monotonic() < deadline, f"{url} not ready after {seconds} s"
        time.sleep(0.3)


def post(
    url: str, body: bytes | dict, path: str = "/predict", content_type: str = "application/json"
) -> tuple[int, object]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data,
                                     headers={"content-type": content_type})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get(url: str, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as response:
        return response.status, response.read().decode()


def metric_sums(url: str, name: str, label: str) -> dict[str, float]:
    """`name`'s value summed over everything but `label`, per value of `label`."""
    sums: dict[str, float] = {}
    for line in get(url, "/metrics")[1].splitlines():
        if line.startswith(f"{name}{{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            key = dict(part.split("=", 1) for part in labels.split(","))[label].strip('"')
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def predict_with_id(url: str, x: np.ndarray) -> tuple[list[dict], str]:
    """The answer and its X-Request-ID, which /feedback takes."""
    request = urllib.request.Request(f"{url}/predict", json.dumps({"inputs": x.tolist()}).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read()), response.headers["X-Request-ID"]
