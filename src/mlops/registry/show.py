"""Plain-text views of the registry for the CLI: alias history and a version's lineage."""

from __future__ import annotations

from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from rich.console import Console
from rich.table import Table

from mlops.registry.history import read_history
from mlops.registry.model_metadata import CLASSES_KEY, FEATURES_KEY


def history_table(client: MlflowClient, model_name: str) -> Table:
    table = Table(title=f"alias history of {model_name}")
    for column in (
        "#",
        "time (UTC)",
        "alias",
        "from",
        "to",
        "kind",
        "reason",
        "scores",
        "data md5",
    ):
        table.add_column(column, overflow="fold")
    rows = []
    for move in read_history(client, model_name):
        scores = ", ".join(f"{k} {v:.4f}" for k, v in move.scores.items() if v is not None)
        rows.append((move.time, [
            str(move.seq), move.time, move.alias, move.from_version or "-", move.to_version,
            move.kind, move.reason, scores or "-", (move.data_md5 or "-")[:12],
        ]))  # fmt: skip
    rows += reproduction_rows(client, model_name)
    for _, row in sorted(rows, key=lambda item: item[0]):
        table.add_row(*row)
    return table


def reproduction_rows(client: MlflowClient, model_name: str) -> list[tuple[str, list[str]]]:
    """Each rebuild of a version (mlops reproduce) beside the alias moves: no alias moves."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, f"tags.`mlops.run_type` = 'reproduction' and "
        f"tags.`reproduction.of` LIKE '{model_name}/%'",
    )  # fmt: skip
    rows = []
    for run in runs:
        version = run.data.tags["reproduction.of"].rsplit("/", 1)[1]
        matches = run.data.tags.get("reproduction.matches") == "true"
        when = datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
        reason = (f"rebuilt from its lineage in run {run.info.run_id}: "
                  f"{'matches' if matches else 'DIFFERS'}")  # fmt: skip
        rows.append((when, ["-", when, "-", version, "-", "reproduced", reason, "-",
                            run.data.tags.get("data.file_md5", "-")[:12]]))  # fmt: skip
    return rows


def logged_metadata(client: MlflowClient, version: ModelVersion) -> dict:
    """The metadata of the version's MLmodel file (mlops.registry.model_metadata)."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        uri = f"models:/{version.name}/{version.version}"
        return mlflow.models.get_model_info(uri).metadata or {}
    except Exception:  # no MLmodel file: registered by other code
        return {}


def listed(values: object, missing: str, shown: int = 20) -> str:
    if not isinstance(values, list):
        return missing
    more = f", ... ({len(values)} in all)" if len(values) > shown else ""
    return ", ".join(map(str, values[:shown])) + more


def lineage_table(client: MlflowClient, version: ModelVersion) -> Table:
    """What made this version: code, data, run, config, environment, and its gate verdict."""
    model = client.get_registered_model(version.name)
    aliases = sorted(a for a, v in model.aliases.items() if str(v) == str(version.version))
    from mlops.registry.evaluate import training_run_id

    trained_by = training_run_id(version) or version.run_id
    run = client.get_run(trained_by)
    artifacts = f"{run.info.artifact_uri}"
    rows = {
        "model": f"{version.name} version {version.version}",
        "aliases": ", ".join(f"@{a}" for a in aliases) or "-",
        "created (UTC)": datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(
            timespec="seconds"
        ),
        "training run": trained_by,
        **({"compression run": version.run_id} if trained_by != version.run_id else {}),
        "git commit": version.tags.get("git.commit", "-"),
        "git dirty": version.tags.get("git.dirty", "-"),
        "data (data.dvc md5)": version.tags.get("data.dvc_md5", "-"),
        "data file": version.tags.get("data.file") or run.data.tags.get("data.file", "-"),
        "data file md5": version.tags.get("data.file_md5", "-"),
        "data matches pin": version.tags.get("data.matches_pin", "-"),
        "overrides": version.tags.get("hydra.overrides", "-"),
        "config": f"{artifacts}/config/train.yaml",
        "environment": f"{artifacts}/environment/pip-freeze.txt",
        "training test/acc": f"{run.data.metrics.get('test/acc', float('nan')):.4f}",
    }
    metadata = logged_metadata(client, version)
    rows["classes"] = listed(metadata.get(CLASSES_KEY), "- (not logged: outputs 0..C-1)")
    rows["features"] = listed(metadata.get(FEATURES_KEY), "- (not trained on a CSV)")
    rows |= {
        k: v
        for k, v in sorted(version.tags.items())
        if k.startswith(("evaluation.", "gate.", "promotion.", "compress."))
    }
    table = Table(title=f"{version.name} v{version.version}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in rows.items():
        table.add_row(key, value)
    return table


def print_table(table: Table) -> None:
    Console(width=160).print(table)
