"""`make compress`: ONNX and int8 variants of one registered version, each scored like its
parent on the pinned test split, gated, and registered as a new version of the same model
with its lineage. One MLflow run holds the variants, their figures and the table."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version as installed
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion
from omegaconf import DictConfig

from mlops.compress.export import export_onnx, parity_batches, parity_problem
from mlops.compress.gate import CompressionRule, Scores, refusals
from mlops.compress.int8 import quantize_int8
from mlops.compress.measure import median_latency_ms, torch_threads
from mlops.compress.report import Row, markdown_table, size_text
from mlops.compress.runtime import onnx_forward, onnx_session
from mlops.errors import CompressError, MlopsError, first_line
from mlops.messages import LOG, tell
from mlops.registry.evaluate import (
    Evaluator,
    chooses_data,
    classification_metrics,
    data_key_overrides,
    with_training_data,
)
from mlops.registry.history import move_alias
from mlops.registry.lock import registry_lock
from mlops.registry.model_metadata import labels_for_model, logged_classes

ONNX, INT8 = "onnx", "onnx-int8"
METHODS = (ONNX, INT8)
# a variant's version carries its parent's lineage: the code, data and config it came from
LINEAGE_PREFIXES = ("git.", "data.", "hydra.", "model.", "monitoring.")
# what makes two variants of one parent the same: compressing again registers nothing new
SAME_VARIANT_TAGS = ("compress.method", "compress.exporter", "compress.opset", "compress.int8_mode")


@dataclass
class Compression:
    model_name: str
    parent_version: str
    run_id: str
    rows: list[Row]  # the parent first
    batch_size: int


def check_methods(methods: Sequence[str]) -> list[str]:
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise CompressError(
            f"compress.methods={methods}: {'unknown ' + ', '.join(unknown) if unknown else 'none'}"
            f"; choose from {', '.join(METHODS)}, e.g. compress.methods=[{ONNX}]"
        )
    return methods


def check_parent(version: ModelVersion, model_dir: Path) -> None:
    from mlflow.models import Model

    label = f"{version.name} version {version.version}"
    if method := version.tags.get("compress.method"):
        parent = version.tags.get("compress.parent_version", "?")
        raise CompressError(
            f"{label} is already the {method} variant of version {parent}: compress version "
            f"{parent} instead (VERSION={parent})"
        )
    if "pytorch" not in Model.load(str(model_dir)).flavors:
        raise CompressError(f"{label} is not a pytorch model; make compress takes the versions "
                            "make train registers")  # fmt: skip


def model_size(model_dir: Path) -> int:
    """Bytes of the network itself: the pytorch flavor's data folder."""
    from mlflow.models import Model

    data = model_dir / Model.load(str(model_dir)).flavors["pytorch"]["model_data"]
    return sum(path.stat().st_size for path in data.rglob("*") if path.is_file())


def latencies(
    forward: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, measure: DictConfig
) -> tuple[float, float]:
    one, batch = parity_batches(samples, [1, int(measure.batch_size)])
    repeats, warmup = int(measure.repeats), int(measure.warmup)
    return (
        median_latency_ms(forward, one, repeats, warmup),
        median_latency_ms(forward, batch, max(repeats // 4, 1), max(warmup // 4, 1)),
    )


def pip_requirements() -> list[str]:
    """An ONNX variant runs without torch: what MLflow's onnx flavor loads it with."""
    return [f"{p}=={installed(p)}" for p in ("mlflow", "onnx", "onnxruntime", "numpy")]


@dataclass(frozen=True)
class Candidate:
    method: str
    model: object  # onnx.ModelProto
    detail: str
    tags: dict[str, str]
    int8_weight_share: float | None = None


def worst_recall_drop(parent: dict[str, float], variant: dict[str, float]) -> str:
    """The class whose test recall fell most from the parent's, e.g. `class 8: 0.0278`."""
    from mlops.registry.gate import RECALL_PREFIX

    drops = {
        key.removeprefix(RECALL_PREFIX): parent[key] - variant.get(key, 0.0)
        for key in parent
        if key.startswith(RECALL_PREFIX)
    }
    if not drops:
        return "-"
    label, drop = max(drops.items(), key=lambda item: item[1])
    return f"class {label}: {drop:.4f}"


def torch_from(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def network_forward(network) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x)).numpy()

    return forward


def registered_variant(
    client: MlflowClient, parent: ModelVersion, candidate: Candidate
) -> str | None:
    """The version number of an earlier identical variant of `parent`, if any."""
    wanted = {**candidate.tags, "compress.method": candidate.method}
    for version in client.search_model_versions(f"name='{parent.name}'"):
        tags = version.tags
        if tags.get("compress.parent_version") == str(parent.version) and all(
            tags.get(key) == wanted.get(key) for key in SAME_VARIANT_TAGS
        ):
            return str(version.version)
    return None


class Compressor:
    """Compresses one parent version; the figures of the parent and its variants come from
    the same process and minutes, with the same thread count."""

    def __init__(
        self, cfg: DictConfig, client: MlflowClient, evaluator: Evaluator, data_cfg: DictConfig
    ) -> None:
        self.cfg, self.client, self.evaluator, self.data_cfg = cfg, client, evaluator, data_cfg
        settings = cfg.compress
        self.rule = CompressionRule(**settings.rule)
        self.measure = settings.measure
        self.threads = int(settings.measure.threads)
        splits = evaluator.datamodule.splits
        self.x_test = np.ascontiguousarray(splits.x_test, dtype=np.float32)
        self.splits = splits

    def scores(self, probabilities: np.ndarray, label: str, classes: list) -> dict[str, float]:
        y_test = labels_for_model(self.splits.y_test, self.splits.classes, classes, label)
        return classification_metrics(probabilities, y_test)

    def free_steps_network(self, parent: ModelVersion, torch_forward, sizes):
        """An RNN's network rebuilt from its training run, checked against the registered
        graph, for an export with a free sequence length; None and why not otherwise."""
        from mlops.compress.network import rebuilt_rnn
        from mlops.models.inference import outputs_problem

        network, why = rebuilt_rnn(self.client, parent, self.data_cfg, self.evaluator.datamodule)
        if network is None:
            return None, why
        problem = outputs_problem(
            lambda x: torch_from(torch_forward(x.numpy())), network,
            parity_batches(self.x_test, sizes), "rebuilt network",
        )  # fmt: skip
        return (None, f"{problem} against the registered graph") if problem else (network, "")

    def candidates(
        self, parent: ModelVersion, model_dir: Path, methods: list[str], torch_forward
    ) -> list[Candidate]:
        """The variants asked for, the ONNX export checked against `torch_forward` (the
        registered graph) first."""
        import onnxruntime

        from mlops.compress.network import other_lengths, steps_axis

        sizes = [*self.cfg.compress.onnx.parity_batch_sizes, int(self.cfg.deploy.max_batch_size)]
        network, fixed_because = self.free_steps_network(parent, torch_forward, sizes)
        axis = steps_axis(self.x_test.shape[1:])
        if network is not None:
            exported = export_onnx(network, self.x_test[:2], axis)
        else:
            exported = export_onnx(model_dir, self.x_test[:2])
        session = onnx_session(exported.model.SerializeToString(), self.threads)
        atol = float(self.cfg.compress.onnx.atol)
        problem = parity_problem(
            torch_forward, onnx_forward(session), parity_batches(self.x_test, sizes), atol
        )
        lengths = other_lengths(self.x_test[:7], axis) if network is not None else []
        if problem is None and network is not None:  # other lengths: against the network
            problem = parity_problem(network_forward(network), onnx_forward(session), lengths, atol)
        if problem:
            raise CompressError(
                f"the ONNX export {problem} against the torch graph: no variant is built from "
                f"an export that answers differently (exporter {exported.exporter}, opset "
                f"{exported.opset}); report it with the model's config"
            )
        free = f"batch, steps (axis {axis})" if network is not None else "batch"
        checked = f"parity at batch {sizes}" + (
            f" and steps {[x.shape[axis] for x in lengths]}" if lengths else ""
        )
        base = {
            "compress.exporter": exported.exporter,
            "compress.opset": str(exported.opset),
            "compress.onnxruntime": onnxruntime.__version__,
            "compress.free_axes": free,
            **({"compress.fixed_steps": fixed_because} if parent.tags.get("model.family") == "rnn"
               and network is None else {}),
        }  # fmt: skip
        detail = f"{exported.exporter}, opset {exported.opset}, free axes: {free}, {checked}"
        found = []
        if ONNX in methods:
            found.append(Candidate(ONNX, exported.model, detail, base))
        if INT8 in methods:
            settings = self.cfg.compress.int8
            calibration = self.splits.x_train[: int(settings.calibration_samples)]
            int8 = quantize_int8(exported.model, str(settings.mode), calibration)
            tags = {
                **base,
                "compress.int8_mode": int8.mode,
                "compress.int8_layers": int8.describe(),
                "compress.int8_weight_share": f"{int8.int8_weight_share:.4f}",
                "compress.calibration": f"{len(calibration)} training samples"
                if int8.mode == "static"
                else "none (dynamic)",
            }
            how = f"{int8.mode} int8 from the onnx export; {int8.describe()}"
            found.append(Candidate(INT8, int8.model, how, tags, int8.int8_weight_share))
        return found

    def run(self, parent: ModelVersion, model_dir: Path, methods: list[str], run_id: str):
        from mlflow.models import Model

        from mlops.models.inference import load_probability_model

        logged = Model.load(str(model_dir))
        self.input_example = logged.load_input_example(str(model_dir))
        torch_forward = load_probability_model(model_dir)
        with torch_threads(self.threads):
            parent_p = torch_forward(self.x_test)
            classes = logged_classes(logged.metadata, parent_p.shape[1])
            label = f"{parent.name} version {parent.version}"
            parent_scores = Scores(self.scores(parent_p, label, classes))
            parent_row = Row(
                f"torch (v{parent.version})",
                parent_scores.metrics["test/acc"],
                model_size(model_dir),
                *latencies(torch_forward, self.x_test, self.measure),
            )
        rows, passing = [parent_row], []
        for candidate in self.candidates(parent, model_dir, methods, torch_forward):
            session = onnx_session(candidate.model.SerializeToString(), self.threads)
            forward = onnx_forward(session)
            p = forward(self.x_test)
            scores = Scores(
                self.scores(p, f"the {candidate.method} variant", classes),
                float((p.argmax(axis=1) == parent_p.argmax(axis=1)).mean()),
                candidate.int8_weight_share,
            )
            row = Row(
                candidate.method,
                scores.metrics["test/acc"],
                candidate.model.ByteSize(),
                *latencies(forward, self.x_test, self.measure),
                drop=parent_row.accuracy - scores.metrics["test/acc"],
                agreement=scores.agreement,
                detail=candidate.detail,
                refusals=refusals(self.rule, parent_scores, scores),
                worst_recall_drop=worst_recall_drop(parent_scores.metrics, scores.metrics),
            )
            row.registered = "no: " + "; ".join(row.refusals) if row.refusals else "pending"
            rows.append(row)
            if not row.refusals:
                passing.append((candidate, row))
        self.log_figures(run_id, rows)
        for candidate, row in passing:
            if existing := registered_variant(self.client, parent, candidate):
                row.registered = f"v{existing} (registered before)"
                tell(f"{parent.name} version {existing} is this {candidate.method} variant of "
                     f"version {parent.version} already: not registered again")  # fmt: skip
                continue
            number = self.register(parent, logged, candidate, row, run_id)
            row.registered = f"v{number} @{candidate.method}"
        return rows

    def log_figures(self, run_id: str, rows: list[Row]) -> None:
        now = int(time.time() * 1000)
        metrics = []
        for row in rows:
            key = row.variant.split(" ")[0]
            figures = {
                "test_acc": row.accuracy,
                "agreement": row.agreement,
                "size_bytes": row.size_bytes,
                "latency_b1_ms": row.latency_b1_ms,
                "latency_batch_ms": row.latency_batch_ms,
            }
            metrics += [Metric(f"{key}/{name}", float(v), now, 0) for name, v in figures.items()]
        self.client.log_batch(run_id, metrics=metrics)

    def register(
        self, parent: ModelVersion, logged, candidate: Candidate, row: Row, run_id: str
    ) -> str:
        """Log the variant to the compression run, register it, score the registered copy
        with the promotion gate's evaluator, and point the method's alias at it."""
        import mlflow.onnx

        name = parent.name
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                candidate.model,
                name=candidate.method,
                signature=logged.signature,
                input_example=self.input_example,  # the service's example request
                metadata={**(logged.metadata or {}), "compress_method": candidate.method},
                pip_requirements=pip_requirements(),
                onnx_execution_providers=["CPUExecutionProvider"],
                save_as_external_data=False,
            )
            with contextlib.redirect_stderr(io.StringIO()) as said:  # MLflow prints, not
                registered = mlflow.register_model(info.model_uri, name)  # logs, its echo
        for line in said.getvalue().splitlines():
            LOG.info(line)
        number = str(registered.version)
        tags = {
            **{k: v for k, v in parent.tags.items() if k.startswith(LINEAGE_PREFIXES)},
            **candidate.tags,
            "run_id": run_id,
            "serialization_format": "onnx",
            "compress.method": candidate.method,
            "compress.parent_version": str(parent.version),
            "compress.parent_run_id": parent.run_id or "",
            "compress.accuracy_drop": f"{row.drop:.6f}",
            "compress.agreement": f"{row.agreement:.6f}",
            "compress.worst_recall_drop": row.worst_recall_drop,
            "compress.size_bytes": str(row.size_bytes),
            "compress.latency_b1_ms": f"{row.latency_b1_ms:.4f}",
            "compress.rule": json.dumps(asdict(self.rule)),
        }
        for key, value in tags.items():
            self.client.set_model_version_tag(name, number, key, value)
        self.client.update_model_version(
            name, number,
            description=f"{candidate.method} of version {parent.version} ({candidate.detail}); "
            f"test/acc={row.accuracy:.4f} (drop {row.drop:+.4f}), agreement "
            f"{row.agreement:.4f}, {size_text(row.size_bytes)}; passed the compression gate",
        )  # fmt: skip
        version = self.client.get_model_version(name, number)
        evaluation = self.evaluator.evaluate(version)
        if abs(evaluation.metrics["test/acc"] - row.accuracy) > 1e-9:
            raise CompressError(
                f"{name} version {number} as registered scores test/acc "
                f"{evaluation.metrics['test/acc']:.4f}, not the {row.accuracy:.4f} measured "
                "before registering it: the registry's copy differs; report it"
            )
        with registry_lock(self.client, name):
            move_alias(
                self.client, name, candidate.method, number, "compress",
                f"{candidate.method} of version {parent.version}: drop {row.drop:+.4f}, "
                f"agreement {row.agreement:.4f}",
                scores={"test/acc": row.accuracy, "agreement": row.agreement},
                data_md5=self.evaluator.data_md5,
            )  # fmt: skip
        tell(f"registered {name} version {number} ({candidate.method} of version "
             f"{parent.version}), alias @{candidate.method}")  # fmt: skip
        return number


def compress(
    cfg: DictConfig, client: MlflowClient, model_name: str, ref: str, overrides: Sequence[str] = ()
) -> Compression:
    """Build, score and gate the configured methods' variants of `model_name` at `ref` (a
    number or @alias, resolved once); register those that pass. Nothing is registered for a
    bad model, version or method."""
    from mlops import training
    from mlops.registry.aliases import resolve_version

    methods = check_methods(cfg.compress.methods)
    parent = resolve_version(client, model_name, ref)
    if chooses_data(overrides):
        data_cfg = cfg
    else:
        data_cfg = with_training_data(cfg, client, parent, data_key_overrides(overrides)) or cfg
    datamodule = training.load_data(data_cfg)
    mlflow.set_tracking_uri(client.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mlops-compress-") as folder:
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{parent.name}/{parent.version}", dst_path=folder
            )
        )
        check_parent(parent, model_dir)
        evaluator = training.evaluator_for(data_cfg, client, datamodule)
        run = client.create_run(
            evaluator.experiment_id(),
            run_name=f"compress {parent.name} v{parent.version}",
            tags={
                "mlops.run_type": "compression",
                "model.name": parent.name,
                "model.version": str(parent.version),
                "model.training_run_id": parent.run_id or "",
                "compress.methods": ",".join(methods),
                "data.dvc_md5": evaluator.data_md5,
                "data.file": str(datamodule.path),
                "data.file_md5": evaluator.file_md5,
            },
        )
        run_id = run.info.run_id
        evaluator.parent_run_id = run_id  # the variants' evaluations nest under it
        try:
            compressor = Compressor(cfg, client, evaluator, data_cfg)
            rows = compressor.run(parent, model_dir, methods, run_id)
        except Exception as error:
            reason = str(error) if isinstance(error, MlopsError) else first_line(error)
            client.set_tag(run_id, "compress.error", reason[:5000])
            client.set_terminated(run_id, "FAILED")
            raise
    batch_size = int(cfg.compress.measure.batch_size)
    client.log_text(run_id, markdown_table(rows, batch_size), "compression.md")
    client.log_dict(run_id, [asdict(row) for row in rows], "compression.json")
    client.set_terminated(run_id)
    return Compression(parent.name, str(parent.version), run_id, rows, batch_size)
