"""`mlops deploy`: resolve a registered version, import it into the BentoML model store
and build a Bento tagged with the version. Everything is resolved and checked before
anything is imported or built."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, replace
from importlib.metadata import version as installed
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from omegaconf import DictConfig

from mlops.data.validation import Label
from mlops.errors import DeployError
from mlops.messages import tell
from mlops.monitoring.live import REFERENCE_FILE
from mlops.registry.aliases import ensure_reachable, resolve_version
from mlops.registry.model_metadata import logged_classes, logged_features
from mlops.serving.auth import MODES
from mlops.serving.compiled import COMPILED_FILE, compile_forward
from mlops.serving.deployment import FORMATS, MLFLOW_MODEL_FOLDER, Deployment
from mlops.serving.integrity import file_digests

SERVICE_ENTRY = "from mlops.serving.service import ClassifierService  # noqa: F401\n"
# what the service imports besides the mlops code the Bento carries (bundle_library), per
# served format; uvloop and httptools are what uvicorn's measured speed rests on
# (docs/benchmarks.md). An ONNX Bento has neither torch nor MLflow.
SERVING_STACK = ("bentoml", "numpy", "orjson", "uvloop", "httptools")
SERVED_PACKAGES = {
    "pytorch": ("torch", "mlflow", *SERVING_STACK),
    "onnx": ("onnxruntime", *SERVING_STACK),
}
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
LAST_BENTO_FILE = "LAST_BENTO"
BENTO_SUFFIX = "-service"
# BentoML names: lowercase alphanumerics, '.', '_', '-', alphanumeric at both ends, at most
# 63 characters, which the Bento's name (this plus BENTO_SUFFIX) must also fit in
BENTO_NAME = re.compile(r"[a-z0-9]([a-z0-9._-]{0,53}[a-z0-9])?")


@dataclass(frozen=True)
class DeployResult:
    bento_tag: str
    bento_model_tag: str
    build_context: Path
    deployment: Deployment


def bento_name(model_name: str) -> str:
    """The registered model's name in BentoML's stores. MLflow allows names BentoML does
    not (`Digits CNN`), and BentoML lowercases, so `Digits-CNN` and `digits-cnn` would share
    one stored model and serve each other's versions. A name that must change keeps a
    readable form and gets a hash of the exact name."""
    if BENTO_NAME.fullmatch(model_name):
        return model_name
    readable = re.sub(r"[^a-z0-9._-]+", "-", model_name.lower())[:45].strip("-._") or "model"
    return f"{readable}-{hashlib.sha256(model_name.encode()).hexdigest()[:8]}"


def use_project_bentoml_home(cfg: DictConfig) -> Path:
    """BentoML reads BENTOML_HOME when first imported: set it before that (an explicit
    environment variable wins)."""
    home = Path(os.environ.setdefault("BENTOML_HOME", str(Path(cfg.paths.bentoml_home).resolve())))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _served_model(
    model_uri: str,
) -> tuple[tuple[int, ...], tuple[Label, ...], tuple[str, ...], str]:
    """Sample shape, output labels, (for a CSV-trained model) feature names and format of
    a servable version: a PyTorch model with a signature, as `make train` logs it, or an
    ONNX one, as `make compress` logs it."""
    info = mlflow.models.get_model_info(model_uri)
    served = [f for f in FORMATS if f in info.flavors]
    if not served:
        raise DeployError(
            f"{model_uri} has flavors {sorted(info.flavors)}, not {' or '.join(FORMATS)}; "
            "the service serves classifiers as `make train` and `make compress` log them: "
            "deploy one of those"
        )
    signature = info.signature
    if signature is None:
        raise DeployError(
            f"{model_uri} was logged without a signature, which gives the service its input "
            "shape; log it with `signature=` (as `make train` does)"
        )
    inputs = tuple(int(d) for d in signature.inputs.inputs[0].shape)
    outputs = tuple(int(d) for d in signature.outputs.inputs[0].shape)
    features = tuple(logged_features(info.metadata) or ())
    classes = tuple(logged_classes(info.metadata, outputs[-1]))
    return inputs[1:], classes, features, served[0]


def _import_model(tag: str, model_uri: str, labels: dict[str, str]) -> None:
    """Import a registered version once; a stored model under the same tag from another
    run (a recreated tracking store numbers its versions from 1 again) is replaced, so the
    Bento serves this version's weights and no other."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        stored = None
    if stored is not None and stored.info.labels == labels:
        return
    if stored is not None:
        bentoml.models.delete(tag)
    bentoml.mlflow.import_model(tag, model_uri, labels=labels)


def _example_inputs(tag: str, samples: int = 2) -> tuple[Any, ...]:
    """The first samples of the input example MLflow logged with the version (`make
    train` logs five test samples), to 6 significant digits; none for a version logged
    without one."""
    import bentoml

    path = Path(bentoml.models.get(tag).path_of(MLFLOW_MODEL_FOLDER))
    example = path / "serving_input_example.json"
    if not example.exists():
        return ()
    inputs = json.loads(example.read_text()).get("inputs")
    if not isinstance(inputs, list):  # a DataFrame or dict example: not this service's form
        return ()
    rounded = json.loads(
        json.dumps(inputs[:samples]), parse_float=lambda v: float(f"{float(v):.6g}")
    )
    return tuple(rounded)


def _check_settings(cfg: DictConfig) -> None:
    reconnect_every = int(cfg.deploy.reconnect_every)
    if reconnect_every < 0:
        raise DeployError(
            f"deploy.reconnect_every={reconnect_every}: use a number of responses (100) or 0 "
            "to keep connections open"
        )
    rate = float(cfg.deploy.get("payload_sample_rate", 0))
    if not 0 <= rate <= 1:
        raise DeployError(
            f"deploy.payload_sample_rate={rate}: use the share of answered samples to log, "
            "from 0 (none) to 1 (all); 0.01 logs one in a hundred"
        )
    mode = str((cfg.deploy.get("auth") or {}).get("mode", "off"))
    if mode not in MODES:
        raise DeployError(
            f"deploy.auth.mode={mode}: use auto (API keys on any address but 127.0.0.1), on or off"
        )
    ttl = float(cfg.deploy.get("feedback_ttl_days", 30))
    if not ttl > 0:
        raise DeployError(
            f"deploy.feedback_ttl_days={ttl}: use the days after an answer its label may "
            "still come back (30)"
        )


def _compile(tag: str, deployment: Deployment, context: Path) -> tuple[str, ...]:
    """The stored version's graph compiled into the build context, checked at one sample,
    a full adaptive batch and the largest request: the flags of the CPU it is for, or none
    (a warning says why) and the Bento serves the exported graph."""
    import time

    import bentoml
    import numpy as np

    from mlops.models.inference import exported_program, lifted_forward
    from mlops.quiet import silence_unactionable_messages

    silence_unactionable_messages()  # torch's own deprecation notes while it compiles
    program = exported_program(bentoml.models.get(tag).path_of(MLFLOW_MODEL_FOLDER))
    if program is None or lifted_forward(program) is None:
        why = (
            "is a pickle-format model (only exported graphs compile)"
            if program is None
            else "has a graph that does not take one input of any batch size to one output"
        )
        tell(f"deploy.compile: {tag} {why}; served as it is")
        return ()
    examples = np.asarray(deployment.example_inputs or np.zeros((1, *deployment.input_shape)),
                          dtype=np.float32)  # fmt: skip
    sizes = (1, deployment.max_batch_size, deployment.max_request_samples)
    started = time.perf_counter()
    compiled = compile_forward(program, context / COMPILED_FILE, examples, sizes)
    if isinstance(compiled, str):
        tell(
            f"warning: deploy.compile: {compiled}; the Bento serves the exported graph (same "
            "answers, slower). Set deploy.compile=false to skip the attempt.",
            warning=True,
        )
        return ()
    tell(f"compiled the forward pass for this CPU in {time.perf_counter() - started:.0f} s")
    return compiled


def _write_reference(cfg: DictConfig, client: MlflowClient, version, context: Path) -> bool:
    """The version's reference profile into the build context, for the workers to count
    live inputs against (deploy.monitoring); False, with the reason, when there is none."""
    from mlops.monitoring.reference import load_reference

    if not cfg.deploy.get("monitoring", True):  # a config folder older than the key: on
        return False
    profile, why = load_reference(client, version)
    if profile is None:
        tell(f"deploy.monitoring: {why}; served without input monitoring")
        return False
    (context / REFERENCE_FILE).write_text(json.dumps(profile))
    return True


def bundle_library(context: Path) -> None:
    """The Bento carries the mlops code it serves, as of this deploy: `bentoml serve` puts
    the Bento's own folder first on the import path, so a Bento exported, containerized or
    served after the checkout has moved on runs the code it was built and checked with."""
    import mlops

    shutil.copytree(
        Path(mlops.__file__).parent,
        context / "mlops",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )


def python_requirements(model_format: str = "pytorch") -> tuple[dict[str, Any], list[Any]]:
    """Exact pins of what the service imports, and the build's environment variables.

    A local torch build (`2.13.0+cpu`) exists only on PyTorch's own index for that build,
    which a container build is told. That index also mirrors numpy and others at fewer
    versions, and uv, which BentoML's Dockerfile installs with, takes a package only from
    the first index that has it by default; `unsafe-best-match` lets uv pick each pin from
    whichever index holds it, as pip does (set for the whole image: BentoML passes a
    build-only variable as a Docker secret, which a plain `docker build` lacks)."""
    from bentoml._internal.bento.build_config import BentoEnvSchema

    packages = SERVED_PACKAGES[model_format]
    pins = [f"{name}=={installed(name)}" for name in packages]
    requirements: dict[str, Any] = {
        "packages": pins,
        "lock_packages": False,  # locking resolves online; these pins are exact already
    }
    _, _, build = installed("torch").partition("+")
    if not build or "torch" not in packages:
        return requirements, []
    requirements["extra_index_url"] = [PYTORCH_INDEX + build]
    return requirements, [BentoEnvSchema("UV_INDEX_STRATEGY", "unsafe-best-match")]


def deploy(cfg: DictConfig, model_name: str, ref: str) -> DeployResult:
    _check_settings(cfg)
    tracking_uri = cfg.logger.tracking_uri
    ensure_reachable(tracking_uri)
    client = MlflowClient(tracking_uri)
    version = resolve_version(client, model_name, ref)
    number = str(version.version)
    model_uri = f"models:/{model_name}/{number}"
    # models:/ URIs below (MLflow's and BentoML's readers) resolve against the global URI,
    # which would otherwise be MLflow's default store, not the configured one
    mlflow.set_tracking_uri(tracking_uri)
    input_shape, classes, features, model_format = _served_model(model_uri)
    use_project_bentoml_home(cfg)
    import bentoml

    stored_name = bento_name(model_name)
    auth = cfg.deploy.get("auth") or {}  # a config folder older than deploy.auth: off
    deployment = Deployment(
        bento_model_tag=f"{stored_name}:v{number}",
        model_name=model_name,
        model_version=number,
        alias=ref.removeprefix("@") if not str(ref).isdigit() else "",
        run_id=version.run_id or "",
        git_commit=version.tags.get("git.commit", "unknown"),
        data_md5=version.tags.get("data.dvc_md5", "unknown"),
        data_matches_pin=version.tags.get("data.matches_pin", "unknown"),
        input_shape=input_shape,
        num_classes=len(classes),
        classes=classes,
        features=features,
        max_batch_size=int(cfg.deploy.max_batch_size),
        max_latency_ms=int(cfg.deploy.max_latency_ms),
        max_request_samples=int(cfg.deploy.max_request_samples),
        max_body_bytes=int(cfg.deploy.max_body_bytes),
        workers=int(cfg.deploy.workers),
        torch_threads=int(cfg.deploy.torch_threads),
        access_log=bool(cfg.deploy.access_log),
        tracing=bool(cfg.deploy.tracing),
        reconnect_every=int(cfg.deploy.reconnect_every),
        feedback_ttl_days=float(cfg.deploy.get("feedback_ttl_days", 30)),
        payload_sample_rate=float(cfg.deploy.get("payload_sample_rate", 0)),
        auth=str(auth.get("mode", "off")),
        auth_keys_file=str(Path(auth.get("keys_file") or ".mlops-keys").resolve()),
        auth_metrics=bool(auth.get("metrics", False)),
        payload_dir=str(Path(cfg.paths.get("payload_dir", "payloads")).resolve()),
        model_format=model_format,
    )
    labels = {
        "registered_model": model_name,
        "registered_version": number,
        "run_id": deployment.run_id,
        "git_commit": deployment.git_commit,
        "data_md5": deployment.data_md5.removesuffix(".dir"),
        "format": model_format,
    }
    _import_model(deployment.bento_model_tag, model_uri, labels)
    deployment = replace(deployment, example_inputs=_example_inputs(deployment.bento_model_tag))

    context = Path(cfg.paths.bento_build_dir) / f"{stored_name}-v{number}"
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    (context / "service.py").write_text(SERVICE_ENTRY)
    bundle_library(context)
    deployment = replace(deployment, monitoring=_write_reference(cfg, client, version, context))
    if cfg.deploy.compile and model_format == "pytorch":  # ONNX Runtime optimizes on load
        deployment = replace(
            deployment, compiled_for=_compile(deployment.bento_model_tag, deployment, context)
        )
    deployment = replace(deployment, file_sha256=file_digests(
        Path(bentoml.models.get(deployment.bento_model_tag).path), context,
        ([COMPILED_FILE] if deployment.compiled_for else [])
        + ([REFERENCE_FILE] if deployment.monitoring else []),
    ))  # fmt: skip
    deployment.write(context)

    bento_tag = f"{stored_name}{BENTO_SUFFIX}:v{number}"
    python, build_envs = python_requirements(model_format)
    with contextlib.suppress(bentoml.exceptions.NotFound):
        bentoml.bentos.delete(bento_tag)  # redeploying a version rebuilds its Bento
    bento = bentoml.bentos.build(
        "service:ClassifierService",
        name=f"{stored_name}{BENTO_SUFFIX}",
        version=f"v{number}",
        build_ctx=str(context),
        include=["service.py", "deployment.json", "mlops/**/*.py"]
        + ([COMPILED_FILE] if deployment.compiled_for else [])
        + ([REFERENCE_FILE] if deployment.monitoring else []),
        labels=labels,
        python=python,
        envs=build_envs,
    )
    (Path(cfg.paths.bento_build_dir) / LAST_BENTO_FILE).write_text(f"{bento.tag}\n")
    return DeployResult(str(bento.tag), deployment.bento_model_tag, context, deployment)
