"""Descriptions for the MLflow UI's model pages, which list each version's description
beside it while its tags are one click away: what the version is (network, data file and
whether it is the pinned version, scores, overrides), and what the registered model holds."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

PIN_STATES = {"true": "the version data.dvc pins", "false": "not the version data.dvc pins"}


def version_description(version: ModelVersion, scores: str) -> str:
    """E.g. `cnn trained on data/digits/digits.npz (md5 1b2c3d4e, the version data.dvc
    pins) by run 9256c72f; test/acc=0.9963, ...; overrides: model=cnn`. Written once, at
    registration: aliases, which move, are shown by the UI itself."""
    tags = version.tags
    pin = PIN_STATES.get(tags.get("data.matches_pin", ""), "pin unknown")
    return (
        f"{tags.get('model.family', 'model')} trained on {tags.get('data.file', '?')} "
        f"(md5 {tags.get('data.file_md5', '?')[:8]}, {pin}) by run {(version.run_id or '?')[:8]}; "
        f"{scores}; overrides: {tags.get('hydra.overrides', '(none)')}"
    )


def model_description(name: str, dataset: str) -> str:
    return (
        f"Classifiers of the {dataset} data trained by mlops: each `make train` adds a version "
        f"and its promotion gate decides whether it becomes @champion. Serve one with "
        f"`make deploy MODEL={name}` (VERSION=N or @alias; @champion by default)."
    )


def describe(client: MlflowClient, version: ModelVersion, scores: str, dataset: str) -> None:
    """Describe the new version, and the registered model where it has no description yet
    (one its owner wrote is kept)."""
    client.update_model_version(
        version.name, version.version, description=version_description(version, scores)
    )
    if not client.get_registered_model(version.name).description:
        client.update_registered_model(
            version.name, description=model_description(version.name, dataset)
        )
