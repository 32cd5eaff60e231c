"""How a serving worker runs, shared by the service and the benchmark's no-model twin so
that the twin measures BentoML under exactly the service's settings."""

from __future__ import annotations

import gc
from typing import Any


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
