"""How a serving worker runs, shared by the service and the benchmark's no-model twin so
that the twin measures BentoML under exactly the service's settings."""

from __future__ import annotations

import gc
import logging
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError


def service_options(workers: int, access_log: bool, tracing: bool) -> dict[str, Any]:
    """Keyword arguments of `bentoml.service` besides the name."""
    return {
        "workers": workers,
        "traffic": {"timeout": 30},
        "logging": {"access": {"enabled": access_log}},
        # With tracing off, /predict skips the OpenTelemetry middleware, which creates a
        # span per request even when no exporter is configured (18% of a worker, profiled).
        "tracing": {"excluded_urls": [] if tracing else ["/predict"]},
    }


def bind_api_method(service: object, name: str = "predict") -> None:
    """BentoML resolves `self.predict` through its descriptor on every request, which
    re-inspects the signature each time; an instance attribute short-cuts that."""
    method = getattr(type(service), name)
    setattr(service, name, method.__get__(service, type(service)))


def settle_garbage_collector() -> None:
    """Call once everything long-lived is loaded (torch, mlflow, the model): move it out of
    the collector's reach, or every full collection walks millions of objects and stalls
    all in-flight requests for hundreds of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 100)  # fewer, cheaper young collections per request


class ClientErrorsInOneLine(logging.Filter):
    """BentoML logs every request that fails validation as an ERROR with its traceback,
    which buries the server's own errors under its clients' typos (and a misbehaving
    client fills the log). A client error becomes one WARNING line with the reason the
    client was given; anything else keeps its level and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            reason = "; ".join(e["msg"] for e in error.errors(include_url=False)[:3])
        elif isinstance(error, BentoMLException) and error.error_code < 500:
            reason = str(error)
        else:
            return True
        record.msg = "client error on %s [%s] (answered 4xx): %s"
        record.args = (*record.args[:2], reason)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True


def log_client_errors_in_one_line() -> None:
    """Idempotent: on the logger BentoML reports a request's exception with."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())
