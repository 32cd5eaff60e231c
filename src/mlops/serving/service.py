"""The BentoML service: one registered model version behind HTTP.

POST /predict   {"inputs": [...]} -> [{"label": ..., "probabilities": [...]}, ...], with an
                X-Request-ID header naming the answer (mlops.monitoring.feedback)
POST /feedback  {"items": [{"request_id": ..., "index": 0, "label": ...}, ...]}: delayed labels
GET  /metadata  model name, version, alias, run id, data hash, classes, features, format
                and runtime (torch, or ONNX Runtime for an ONNX version: no torch imported)
/livez, /readyz, /metrics (Prometheus; model info, batch sizes and predictions per label added).

Each request is validated on its own (shape, dtype, finite, size) before adaptive batching
merges it with others, so a bad request never fails anyone else's.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import bentoml
import numpy as np
import orjson
from _bentoml_sdk.io_models import IODescriptor, IORootModel
from bentoml.validators import DType, Shape
from pydantic import BaseModel, BeforeValidator, Field, field_validator
from starlette.responses import Response

from mlops.monitoring.feedback import RequestIds, feedback_metrics
from mlops.monitoring.payloads import SAMPLED, PayloadLog, open_payload_log
from mlops.serving.auth import ApiKeys
from mlops.serving.compiled import COMPILED_FILE, load_compiled_forward
from mlops.serving.deployment import MLFLOW_MODEL_FOLDER, Deployment
from mlops.serving.integrity import verify
from mlops.serving.middleware import (
    ConnectionRecycling,
    DocumentedRefusals,
    MetadataRoute,
    RequestHeadersCheck,
    ValidationErrorsAsText,
)
from mlops.serving.openapi import INPUT_LIMIT, OpenAPIDescription, inputs_schema
from mlops.serving.worker import (
    bind_api_method,
    log_client_errors_in_one_line,
    service_options,
    settle_garbage_collector,
)

if TYPE_CHECKING:
    from _bentoml_impl.serde import Serde
    from starlette.requests import Request

DEPLOYMENT = Deployment.read(Path.cwd())


FEATURES = DEPLOYMENT.features
# /metadata, answered by each worker once its __init__ has said which forward pass it runs
SERVED = {**DEPLOYMENT.public_metadata(), "compiled_forward": False, "runtime": ""}


def rows_of(records: list) -> list:
    """`[{"alcohol": 13.2, ...}, ...]`, samples as objects of named features (a model
    trained on a CSV), as rows in the model's feature order; other keys (an id, say) are
    not read."""
    if not FEATURES:
        raise ValueError(
            "samples as objects need a model trained on a CSV, which knows its feature names; "
            "send each sample as an array"
        )
    rows = []
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"sample {number} is not an object of features as sample 0 is")
        missing = [name for name in FEATURES if name not in record]
        if missing:
            raise ValueError(
                f"sample {number} has no feature {', '.join(map(repr, missing[:5]))}; the "
                f"model takes: {', '.join(FEATURES)}"
            )
        rows.append([record[name] for name in FEATURES])
    return rows


def json_value(value: object) -> str:
    return orjson.dumps(value).decode()[:40] if value is not None else "null"


def as_batch(inputs: object) -> np.ndarray:
    """The request's own array, checked before BentoML's `Shape` sees it: that validator
    reshapes whatever arrives to (-1, *sample shape), so two samples of 32 values would be
    answered as one 8x8 sample, and 128 flat values as two. Samples may also come as
    objects of named features (`rows_of`)."""
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        inputs = rows_of(inputs)
    try:
        batch = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError) as error:  # strings, ragged rows, objects
        raise ValueError(f"'inputs' is not an array of numbers: {error}") from None
    if batch.ndim == 0:  # a number, or null
        raise ValueError(
            f"'inputs' is {json_value(inputs)}, not a batch: send a list of samples of shape "
            f"{DEPLOYMENT.input_shape}, even for one sample"
        )
    if len(batch) == 0:
        raise ValueError("empty batch: send at least one sample in 'inputs'")
    if batch.shape[1:] != DEPLOYMENT.input_shape:
        sample = DEPLOYMENT.input_shape
        raise ValueError(
            f"'inputs' has shape {batch.shape}; send a batch of shape (N, "
            f"{', '.join(map(str, sample))}): a list of samples of shape {sample}, even for "
            "one sample"
        )
    if len(batch) > DEPLOYMENT.max_request_samples:
        raise ValueError(
            f"batch of {len(batch)} samples exceeds max_request_samples="
            f"{DEPLOYMENT.max_request_samples}; split the request"
        )
    flat = batch.reshape(len(batch), -1)
    bounded = (np.abs(flat) <= INPUT_LIMIT).all(axis=1)  # False for NaN and inf too
    if not bounded.all():
        first = int(np.flatnonzero(~bounded)[0])
        if not np.isfinite(flat[first]).all():
            raise ValueError(f"sample {first} contains NaN or inf")
        raise ValueError(f"sample {first} has a value beyond {INPUT_LIMIT:g} in magnitude: "
                         "the network's float32 arithmetic would overflow; rescale the "
                         "inputs")  # fmt: skip
    return batch


# Shape and DType make the input a tensor for BentoML (its client encodes arrays by them);
# as_batch runs before them; the OpenAPI page gets the full description
Inputs = Annotated[
    np.ndarray,
    Shape((-1, *DEPLOYMENT.input_shape)),
    DType("float32"),
    BeforeValidator(as_batch),
    OpenAPIDescription(inputs_schema(DEPLOYMENT)),
]


class Input(IODescriptor):
    """The request body: the input model BentoML builds from `predict`'s signature (same
    name, so the same schema), parsed faster. orjson reads the body into lists and
    `as_batch` checks them, which is all pydantic's path does here (its `Shape` and
    `DType` then find the array already right): 64-sample bodies 335 -> 200 us in-process.
    Anything that fails on the way (not JSON, NaN tokens, no 'inputs', a bad array) goes
    through pydantic's path instead, which gives the 400 answer its error."""

    inputs: Inputs

    @classmethod
    async def from_http_request(cls, request: Request, serde: Serde) -> Input:
        if serde.media_type == "application/json":
            try:
                document = orjson.loads(await request.body())
                return cls.model_construct(inputs=as_batch(document["inputs"]))
            except Exception:  # pydantic's path below names what is wrong
                pass
        return await super().from_http_request(request, serde)


LABELS = DEPLOYMENT.labels
# the answer's label is the training data's own label value: an int for digits, a name
# for a CSV of names; so is its type in the OpenAPI schema
Label = str if any(isinstance(label, str) for label in LABELS) else int
NUMBERED = tuple(range(len(LABELS))) == LABELS  # output index == label: no lookup
LABEL_INDEX = {label: index for index, label in enumerate(LABELS)}
REQUEST_IDS = RequestIds(
    f"{DEPLOYMENT.model_name}/{DEPLOYMENT.model_version}/{DEPLOYMENT.run_id}",
    LABELS,
    DEPLOYMENT.feedback_ttl_days,
)


# this worker's sample of answers and its fed-back labels, on disk (deploy.payload_sample_rate)
PAYLOADS: PayloadLog | None = None


class Prediction(BaseModel):
    label: Label
    probabilities: list[float]


class PredictionList(IORootModel[list[Prediction]]):
    """The output type BentoML builds for `list[Prediction]` (same schema, which BentoML's
    client decodes answers with), answered faster. BentoML validates the list into
    `Prediction` objects, dumps them to Python objects to see whether they render as a
    string, then encodes them, in a response of three writes: 5 us for a 1-sample answer
    and 112 us for 64 (in-process, even with pydantic's serializer as the encoder). Here
    orjson encodes the plain list `predict` built (the same JSON values) into one body:
    0.3 and 17 us. The media type is declared: BentoML derives it from the JSON schema,
    regenerated on every response (a quarter of a request's time, profiled). The answer's
    request id, for feedback, is issued here: this is where one request's answers are."""

    @classmethod
    def mime_type(cls) -> str:
        return "application/json"

    @classmethod
    async def to_http_response(cls, obj: list[dict], serde: Serde) -> Response:
        request_id = REQUEST_IDS.issue([answer["label"] for answer in obj])
        if PAYLOADS is not None:
            now = time.time()
            for index, answer in enumerate(obj):
                if SAMPLED in answer:
                    sample, confidence = answer.pop(SAMPLED)
                    PAYLOADS.put({"kind": "prediction", "time": now, "request_id": request_id,
                                  "index": index, "label": answer["label"],
                                  "confidence": confidence, "input": sample})  # fmt: skip
        return Response(orjson.dumps(obj), media_type="application/json",
                        headers={"X-Request-ID": request_id})  # fmt: skip


class FeedbackItem(BaseModel):
    request_id: str = Field(max_length=4096, description="an answer's X-Request-ID header")
    index: int = Field(0, ge=0, description="the sample's position in that request")
    label: Label = Field(description="the sample's true label",
                         json_schema_extra={"enum": list(LABELS)})  # fmt: skip

    @field_validator("label")
    @classmethod
    def known_label(cls, label: int | str) -> int | str:
        if label not in LABEL_INDEX:
            shown = ", ".join(map(repr, LABELS[:20])) + (", ..." if len(LABELS) > 20 else "")
            raise ValueError(f"label {label!r} is not one of the model's classes: {shown}")
        return label


class FeedbackCount(BaseModel):
    received: int
    matched: int = Field(description="items matched to an answer of this version")
    correct: int = Field(description="matched items whose answer was the label")
    unknown: int = Field(description="ids this version did not issue, or no such sample")
    expired: int = Field(description="ids older than the deployment's feedback_ttl_days")


def service_metrics():
    """Created in the worker, after BentoML has set PROMETHEUS_MULTIPROC_DIR, so that
    /metrics (which merges all workers) sees them."""
    from prometheus_client import Counter, Gauge, Histogram

    batch_size = Histogram(
        "mlops_batch_size",
        "Samples per forward pass after adaptive batching",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    )
    model_info = Gauge(
        "mlops_model_info",
        "The served registered model version (value is always 1)",
        ["model_name", "model_version", "alias", "run_id"],
        multiprocess_mode="livemax",
    )
    predictions = Counter(
        "mlops_predictions",
        "Samples answered, per predicted label: the served class mix, to watch for drift",
        ["label"],
    )
    return batch_size, model_info, predictions


def load_torch_probabilities(folder: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch  # in the workers only: `bentoml serve` imports this module to start

    from mlops.models.inference import load_probability_model

    # mlflow.pytorch imports Lightning, when installed, for its training autologging:
    # 1.3 s of a worker's start (measured); a worker never trains, so it goes without.
    sys.modules.setdefault("pytorch_lightning", None)

    torch.set_num_threads(DEPLOYMENT.torch_threads)
    compiled = None
    if DEPLOYMENT.compiled_for:
        compiled = load_compiled_forward(Path(COMPILED_FILE), DEPLOYMENT.compiled_for)
    SERVED["compiled_forward"] = compiled is not None
    SERVED["runtime"] = f"torch {torch.__version__}"
    return load_probability_model(folder, compiled)


@bentoml.service(
    name="mlops-classifier",
    **service_options(DEPLOYMENT.workers, DEPLOYMENT.access_log, DEPLOYMENT.tracing),
)
class ClassifierService:
    bento_model = bentoml.models.BentoModel(DEPLOYMENT.bento_model_tag)

    def __init__(self) -> None:
        # nothing is loaded from a file that is not the one make deploy built
        verify(DEPLOYMENT.file_sha256, Path(self.bento_model.path), Path.cwd())
        folder = self.bento_model.path_of(MLFLOW_MODEL_FOLDER)
        if DEPLOYMENT.model_format == "onnx":  # ONNX Runtime: torch is never imported
            from mlops.serving.onnx_model import load_onnx_probabilities, runtime_version

            self.probabilities = load_onnx_probabilities(folder, DEPLOYMENT.torch_threads)
            SERVED["runtime"] = runtime_version()
        else:
            self.probabilities = load_torch_probabilities(folder)
        self.monitor = None
        if DEPLOYMENT.monitoring:  # the version's reference travels in the Bento
            from mlops.monitoring.live import REFERENCE_FILE, InputMonitor

            self.monitor = InputMonitor.from_file(Path(REFERENCE_FILE))
        global PAYLOADS
        if DEPLOYMENT.payload_sample_rate > 0:
            PAYLOADS = open_payload_log(DEPLOYMENT)
        self.batch_size, model_info, predictions = service_metrics()
        self.judged, self.unmatched = feedback_metrics(LABELS)
        # one series per class from the start, at 0 until predicted: a class that is never
        # predicted shows as 0 rather than as a missing series
        self.predicted = [predictions.labels(label=str(label)) for label in LABELS]
        model_info.labels(
            model_name=DEPLOYMENT.model_name,
            model_version=DEPLOYMENT.model_version,
            alias=DEPLOYMENT.alias,
            run_id=DEPLOYMENT.run_id,
        ).set(1)
        bind_api_method(self)
        log_client_errors_in_one_line()
        settle_garbage_collector()

    @bentoml.api(
        input_spec=Input,
        batchable=True,
        max_batch_size=DEPLOYMENT.max_batch_size,
        max_latency_ms=DEPLOYMENT.max_latency_ms,
    )
    # async: the forward pass of one small batch runs on the event loop, which is cheaper
    # than BentoML's hand-off to a worker thread and back (measured, ~5% more req/s).
    async def predict(self, inputs: Inputs) -> PredictionList:
        self.batch_size.observe(len(inputs))
        probabilities = self.probabilities(inputs)
        if self.monitor is not None:
            self.monitor.observe(inputs, probabilities)
        predicted = probabilities.argmax(axis=1)
        counts = np.bincount(predicted, minlength=len(LABELS))
        for index in np.flatnonzero(counts).tolist():
            self.predicted[index].inc(int(counts[index]))
        labels = predicted.tolist()
        if not NUMBERED:
            labels = [LABELS[index] for index in labels]
        # BentoML splits this list per request; PredictionList encodes each part as it is
        answers = [
            {"label": label, "probabilities": row}
            for label, row in zip(labels, probabilities.tolist(), strict=True)
        ]
        if PAYLOADS is not None:  # the sampled inputs ride along to their request's response
            for index in PAYLOADS.sample(len(answers)):
                answers[index][SAMPLED] = (
                    inputs[index].copy(),
                    max(answers[index]["probabilities"]),
                )
        return answers

    @bentoml.api
    async def feedback(
        self, items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=10_000)]
    ) -> FeedbackCount:
        """Delayed labels: each item names an answer (its X-Request-ID and the sample's
        index in that request) and the true label; counted right or wrong per class."""
        now = time.time()
        counts: Counter[str] = Counter()
        for item in items:
            predicted = REQUEST_IDS.predicted(item.request_id, item.index, now)
            if isinstance(predicted, str):  # unknown or expired
                outcome = predicted
                self.unmatched[predicted].inc()
            else:
                truth = LABEL_INDEX[item.label]
                outcome = "correct" if predicted == truth else "wrong"
                self.judged[(truth, outcome)].inc()
            counts[outcome] += 1
            if PAYLOADS is not None:  # every label, matched or not, for the offline join
                PAYLOADS.put({"kind": "feedback", "time": now, "request_id": item.request_id,
                              "index": item.index, "label": item.label,
                              "outcome": outcome})  # fmt: skip
        return FeedbackCount(
            received=len(items), matched=counts["correct"] + counts["wrong"],
            correct=counts["correct"], unknown=counts["unknown"], expired=counts["expired"],
        )  # fmt: skip


ClassifierService.add_asgi_middleware(ValidationErrorsAsText)
if DEPLOYMENT.auth != "off":
    ClassifierService.add_asgi_middleware(ApiKeys, mode=DEPLOYMENT.auth,
                                          keys_file=DEPLOYMENT.auth_keys_file,
                                          protect_metrics=DEPLOYMENT.auth_metrics)  # fmt: skip
ClassifierService.add_asgi_middleware(DocumentedRefusals, auth=DEPLOYMENT.auth,
                                      protect_metrics=DEPLOYMENT.auth_metrics)  # fmt: skip
ClassifierService.add_asgi_middleware(RequestHeadersCheck, max_body_bytes=DEPLOYMENT.max_body_bytes)
ClassifierService.add_asgi_middleware(MetadataRoute, metadata=SERVED)
if DEPLOYMENT.reconnect_every:
    ClassifierService.add_asgi_middleware(ConnectionRecycling, every=DEPLOYMENT.reconnect_every)
