"""The reference profile a version is monitored against: its bins, projection and
confidence, and how it is stored and checked in a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mlops.monitoring.reference import (
    binned,
    load_reference,
    log_reference,
    projection,
    reference_profile,
    stratified_sample,
)


def test_bins_hold_the_training_shares_as_live_values_are_counted() -> None:
    values = np.random.default_rng(0).normal(size=10_000)
    bins = binned(values)
    assert len(bins["edges"]) == 9 and sum(bins["shares"]) == pytest.approx(1.0)
    assert bins["shares"] == pytest.approx([0.1] * 10, abs=0.002)  # quantile bins
    live = np.bincount(np.searchsorted(bins["edges"], values, side="right"), minlength=10)
    assert (live / len(values)).tolist() == bins["shares"]
    constant = binned(np.full(50, 3.0))  # a pixel that is always 0, say
    assert constant["edges"] == [3.0] and constant["shares"] == [0.0, 1.0]


def test_images_get_principal_components_and_tables_their_features() -> None:
    rng = np.random.default_rng(1)
    images = rng.normal(size=(300, 1, 4, 4)).astype(np.float32)
    images[:, 0, 0, 0] *= 10  # one direction with most of the variance
    fitted = projection(images)
    first = np.asarray(fitted["components"][0]).reshape(1, 4, 4)
    assert abs(first[0, 0, 0]) > 0.99 and len(fitted["bins"]) == 4

    y = np.repeat([0, 1, 2], 100)
    table = rng.normal(size=(300, 2)).astype(np.float32)
    confident = np.tile([[0.97, 0.02, 0.01]], (30, 1))
    profile = reference_profile(table, y, table[:30], np.zeros(30, int),
                                lambda x: confident, ["ant", "bee", "cat"], ["a", "b"])  # fmt: skip
    assert list(profile["features"]) == ["a", "b"] and "projection" not in profile
    assert profile["class_priors"] == pytest.approx({"ant": 1 / 3, "bee": 1 / 3, "cat": 1 / 3})
    assert profile["confidence"]["accuracy"] == 1.0
    assert profile["confidence"]["shares"][-2] == 1.0  # 0.97 falls in [0.95, 0.99)
    chosen = stratified_sample(y, per_class=5)
    assert np.bincount(y[chosen]).tolist() == [5, 5, 5]


def test_a_profile_is_found_checked_and_missing_ones_say_why(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("ref", artifact_location=str(tmp_path / "art"))
    run_id = client.create_run(experiment).info.run_id
    client.create_registered_model("ref")
    version = client.create_model_version("ref", source=str(tmp_path), run_id=run_id)
    profile, why = load_reference(client, version)
    assert profile is None and "has no reference profile" in why

    x = np.random.default_rng(2).normal(size=(60, 3)).astype(np.float32)
    y = np.repeat([0, 1], 30)
    made = reference_profile(x, y, x, y, lambda s: np.tile([[0.6, 0.4]], (len(s), 1)), [0, 1])
    sha = log_reference(client, run_id, version, made, x, y)
    version = client.get_model_version("ref", version.version)
    assert version.tags["monitoring.reference_sha256"] == sha
    assert load_reference(client, version) == (json.loads(json.dumps(made)), "")
    sample = np.load(client.download_artifacts(run_id, "reference/sample.npz", str(tmp_path)))
    assert sample["x"].shape == (40, 3)  # 20 per class

    client.set_model_version_tag("ref", version.version, "monitoring.reference_sha256", "0" * 64)
    profile, why = load_reference(client, client.get_model_version("ref", version.version))
    assert profile is None and "does not match its sha256" in why
