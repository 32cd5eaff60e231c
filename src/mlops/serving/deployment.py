"""What a Bento serves: written by `mlops deploy` into the build context as deployment.json,
read by the service at import (BentoML imports it with the build context, or the Bento's
source folder, as working directory), so a built Bento carries its own settings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEPLOYMENT_FILE = "deployment.json"
# where bentoml.mlflow.import_model puts the MLflow model in a stored BentoML model (its
# `MLFLOW_MODEL_FOLDER`, which imports mlflow: an ONNX Bento has none). test_serving checks
# it against BentoML's own, so an upgrade that moves it fails there.
MLFLOW_MODEL_FOLDER = "mlflow_model"
FORMATS = ("pytorch", "onnx")  # the MLflow flavor served: torch or ONNX Runtime


@dataclass(frozen=True)
class Deployment:
    bento_model_tag: str  # e.g. digits-cnn:v3 in the BentoML model store
    model_name: str
    model_version: str
    alias: str  # the alias it was deployed by ("" for a version number)
    run_id: str
    git_commit: str
    data_md5: str
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    num_classes: int
    max_batch_size: int
    max_latency_ms: int
    max_request_samples: int
    max_body_bytes: int
    workers: int
    torch_threads: int  # threads per worker, of torch or of ONNX Runtime
    access_log: bool = False
    tracing: bool = False
    reconnect_every: int = 0  # Connection: close on every Nth response of a worker; 0: never
    data_matches_pin: str = "unknown"  # whether the training file had the bytes data.dvc pins
    classes: tuple[int | str, ...] = ()  # the label of each output; 0..C-1 when empty
    features: tuple[str, ...] = ()  # a CSV-trained model's feature columns, in input order
    # two samples of the version's logged input example: the OpenAPI page's example request
    example_inputs: tuple[Any, ...] = ()
    # the instruction-set flags of the CPU the Bento's compiled forward pass (forward.pt2,
    # mlops.serving.compiled) was built on; empty: the Bento has none
    compiled_for: tuple[str, ...] = ()
    model_format: str = "pytorch"  # pytorch | onnx (served by ONNX Runtime, without torch)
    # inputs and confidence counted against the version's reference (reference.json)
    monitoring: bool = False
    feedback_ttl_days: float = 30.0  # /feedback matches answers up to this old
    # share of answered samples whose input, label and confidence are logged, with every
    # fed-back label, to payload_dir (mlops.monitoring.payloads); 0: none
    payload_sample_rate: float = 0.0
    payload_dir: str = ""  # MLOPS_PAYLOAD_DIR, where the Bento is served, wins
    # sha256 of every file a worker loads (mlops.serving.integrity), checked before loading
    file_sha256: dict[str, str] = field(default_factory=dict)
    # API keys (mlops.serving.auth): auto (any address but loopback), on or off
    auth: str = "off"
    auth_keys_file: str = ""  # MLOPS_API_KEYS_FILE, where the Bento is served, wins
    auth_metrics: bool = False  # /metrics needs a key too

    @property
    def labels(self) -> tuple[int | str, ...]:
        return self.classes or tuple(range(self.num_classes))

    def write(self, directory: Path) -> Path:
        path = directory / DEPLOYMENT_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, directory: Path) -> Deployment:
        path = directory / DEPLOYMENT_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path.resolve()} not found: serve a Bento built by `make deploy`, or pass "
                "its build context as working_dir"
            )
        values = json.loads(path.read_text())
        values["input_shape"] = tuple(values["input_shape"])
        values["classes"] = tuple(values.get("classes", ()))
        values["features"] = tuple(values.get("features", ()))
        values["example_inputs"] = tuple(values.get("example_inputs", ()))
        values["compiled_for"] = tuple(values.get("compiled_for", ()))
        return cls(**values)

    def public_metadata(self) -> dict[str, object]:
        keys = ("model_name", "model_version", "alias", "run_id", "git_commit", "data_md5",
                "data_matches_pin", "input_shape", "num_classes", "classes", "features",
                "bento_model_tag", "model_format", "monitoring")  # fmt: skip
        return {key: getattr(self, key) for key in keys}
