"""A version's reference profile, made at registration from its training data: what its
live inputs, predictions and confidence are compared with. Precomputed (bins, not raw
data), so a service can count live traffic against it with a few numpy calls.

- inputs: tabular samples get per-feature bins at training quantiles with the training
  share of each; images and sequences a few principal components of the flattened
  inputs, binned the same way;
- predictions: the training split's class priors;
- confidence: the validation split's top-1 probability histogram, and its accuracy.

Stored as artifacts of the training run (`reference/profile.json`, a stratified sample of
training inputs in `reference/sample.npz` for offline reports), linked and digested in
the version's `monitoring.*` tags.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

PROFILE_ARTIFACT = "reference/profile.json"
SAMPLE_ARTIFACT = "reference/sample.npz"
FORMAT = 1
BINS = 10  # quantile bins per feature or component
COMPONENTS = 4  # principal components profiled for images and sequences
CONFIDENCE_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # top-1 probability buckets
SAMPLE_PER_CLASS = 20


def binned(values: np.ndarray, bins: int = BINS) -> dict:
    """Interior edges at the values' quantiles (repeated edges merged: a feature with few
    distinct values gets fewer bins) and the share of values in each bin, where a value
    equal to an edge falls in the bin above it, as `np.searchsorted(..., side="right")`
    counts live values."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {
        "edges": edges.tolist(),
        "shares": (counts / len(values)).tolist(),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def projection(x: np.ndarray, components: int = COMPONENTS) -> dict:
    """The training inputs' first principal components (of the flattened samples), for
    inputs too wide to profile element by element."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[: min(components, len(vt))]
    projected = (flat - mean) @ basis.T
    return {
        "mean": mean.tolist(),
        "components": basis.tolist(),
        "bins": [binned(projected[:, i]) for i in range(len(basis))],
    }


def stratified_sample(y: np.ndarray, per_class: int = SAMPLE_PER_CLASS) -> np.ndarray:
    """Up to `per_class` training indices of each class, drawn with a fixed seed."""
    rng = np.random.default_rng(0)
    chosen = [rng.permutation(np.flatnonzero(y == label))[:per_class] for label in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def reference_profile(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    probabilities: Callable[[np.ndarray], np.ndarray],
    classes: Sequence,
    features: Sequence[str] | None = None,
) -> dict:
    """The profile of one version (`probabilities`: its network, float32 in)."""
    sample_shape = list(x_train.shape[1:])
    profile: dict = {"format": FORMAT, "sample_shape": sample_shape, "samples": len(x_train)}
    if len(sample_shape) == 1:
        names = list(features) if features else [f"x{i}" for i in range(sample_shape[0])]
        profile["features"] = {name: binned(x_train[:, i]) for i, name in enumerate(names)}
    else:
        profile["projection"] = projection(x_train)
    counts = np.bincount(y_train, minlength=len(classes))
    shares = counts / len(y_train)
    profile["class_priors"] = {str(c): float(n) for c, n in zip(classes, shares, strict=True)}
    p_val = probabilities(np.ascontiguousarray(x_val, dtype=np.float32))
    top = p_val.max(axis=1)
    buckets = np.bincount(np.searchsorted(CONFIDENCE_EDGES, top, side="right"),
                          minlength=len(CONFIDENCE_EDGES) + 1)  # fmt: skip
    profile["confidence"] = {
        "edges": list(CONFIDENCE_EDGES),
        "shares": (buckets / len(top)).tolist(),
        "mean": float(top.mean()),
        "accuracy": float((p_val.argmax(axis=1) == y_val).mean()),
        "samples": len(y_val),
    }
    return profile


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def log_reference(
    client: MlflowClient, run_id: str, version: ModelVersion, profile: dict,
    x_train: np.ndarray, y_train: np.ndarray,
) -> str:  # fmt: skip
    """Log the profile and a stratified training sample to the run; link them from the
    version's tags. Returns the profile's sha256."""
    text = json.dumps(profile, sort_keys=True)
    with tempfile.TemporaryDirectory(prefix="mlops-reference-") as folder:
        (Path(folder) / "profile.json").write_text(text)
        chosen = stratified_sample(y_train)
        np.savez_compressed(Path(folder) / "sample.npz", x=x_train[chosen], y=y_train[chosen])
        client.log_artifacts(run_id, folder, "reference")
    sha = digest(text)
    for key, value in {
        "monitoring.reference_run_id": run_id,
        "monitoring.reference": PROFILE_ARTIFACT,
        "monitoring.reference_sha256": sha,
    }.items():
        client.set_model_version_tag(version.name, str(version.version), key, value)
    return sha


def load_reference(client: MlflowClient, version: ModelVersion) -> tuple[dict | None, str]:
    """The version's profile, checked against its digest; or None and why there is none
    (a version registered before profiles existed, a deleted run, a changed file)."""
    tags = version.tags
    run_id, path = tags.get("monitoring.reference_run_id"), tags.get("monitoring.reference")
    label = f"{version.name} version {version.version}"
    if not run_id or not path:
        return None, f"{label} has no reference profile (registered before mlops made them)"
    with tempfile.TemporaryDirectory(prefix="mlops-reference-") as folder:
        try:
            local = Path(client.download_artifacts(run_id, path, folder))
        except (MlflowException, OSError):
            return None, f"{label}'s reference profile is gone from run {run_id}"
        text = local.read_text()
    if digest(text) != tags.get("monitoring.reference_sha256"):
        return None, f"{label}'s reference profile does not match its sha256 tag"
    return json.loads(text), ""
