"""`mlops reproduce MODEL --version N` (make reproduce): rebuild a registered version from
its lineage alone (the code at its commit, its overrides, the exact data bytes), train it
in a run tagged as a reproduction, and report metric by metric and prediction by
prediction whether it matches. On CPU the pipeline is deterministic: equal is expected."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from omegaconf import DictConfig

from mlops.errors import UpdateError
from mlops.messages import tell
from mlops.rebuild.code import code_at
from mlops.rebuild.compare import (
    MetricRow,
    PredictionDiff,
    config_differences,
    metric_rows,
    prediction_diff,
)
from mlops.rebuild.data_bytes import training_bytes
from mlops.rebuild.recipe import Recipe, recipe_of, replayed_overrides
from mlops.tracking.run import logged_config

RUN_TYPE = "reproduction"


@dataclass(frozen=True)
class Reproduction:
    recipe: Recipe
    run_id: str
    rows: list[MetricRow]
    predictions: PredictionDiff | None  # None: the rebuild logged no model to compare
    registered_version: str | None
    config_differences: list[str]  # resolved config keys the two runs disagree on

    @property
    def matches(self) -> bool:
        return (all(r.equal for r in self.rows) and not self.config_differences
                and (self.predictions is None or self.predictions.equal))  # fmt: skip


def absolute_tracking_uri(uri: str) -> str:
    """A sqlite store named relative to this directory, named so that a training started
    in another folder (a worktree) writes to the same one."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def takes_log_model(code: Path) -> bool:
    """Whether the commit's pipeline can log a model without registering it."""
    train_yaml = code / "conf" / "train.yaml"
    return train_yaml.is_file() and "\nlog_model:" in train_yaml.read_text()


def rebuild_command(recipe: Recipe, code: Path, data: Path, tracking_uri: str,
                    artifacts_dir: Path, run_dir: Path, register: bool) -> list[str]:  # fmt: skip
    command = [
        sys.executable, str(code / "pipelines" / "train.py"), *replayed_overrides(recipe),
        f"data.path={data}", f"logger.tracking_uri={tracking_uri}",
        f"paths.mlflow_artifacts_dir={artifacts_dir}", f"hydra.run.dir={run_dir}",
        f"register={str(register).lower()}",
    ]  # fmt: skip
    if not register and takes_log_model(code):
        command.append("log_model=true")
    return command


def _rebuilt_run(client: MlflowClient, data: Path) -> str:
    """The run the rebuild created: the only one that read this copy of the data."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`data.file` = '{data}'", max_results=2)
    if len(runs) != 1:
        raise UpdateError(f"found {len(runs)} runs that read {data}, expected the rebuild's one")
    return runs[0].info.run_id


def _test_inputs(cfg: DictConfig, client: MlflowClient, recipe: Recipe, data: Path):
    """The test split of the version's data config, read from the fetched bytes."""
    from mlops import training
    from mlops.registry.evaluate import with_training_data

    version = client.get_model_version(recipe.model_name, recipe.version)
    chosen = with_training_data(cfg, client, version) or cfg
    chosen.data.path = str(data)
    return training.load_data(chosen).splits.x_test


def reproduce(
    cfg: DictConfig, client: MlflowClient, model_name: str, ref: str, register: bool = False
) -> Reproduction:
    recipe = recipe_of(client, model_name, ref)
    root = Path(cfg.paths.root_dir).resolve()
    label = f"{model_name}-v{recipe.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    work = Path(cfg.rebuild.work_dir).resolve() / label
    data = training_bytes(root, recipe, work / "data")
    tracking_uri = absolute_tracking_uri(str(cfg.logger.tracking_uri))
    with code_at(root, recipe.commit, work) as code:
        where = "this checkout" if code == root else f"a worktree of {recipe.commit[:12]}"
        tell(f"rebuilding {model_name} version {recipe.version} from {where}, data md5 "
             f"{recipe.data_md5}, overrides: {' '.join(recipe.overrides) or '(none)'}")  # fmt: skip
        command = rebuild_command(recipe, code, data, tracking_uri,
                                  Path(cfg.paths.mlflow_artifacts_dir).resolve(),
                                  work / "run", register)  # fmt: skip
        path = os.pathsep.join([str(code / "src"), str(code)])  # the commit's mlops, not ours
        env = {**os.environ, "PYTHONPATH": path}
        job = subprocess.run(command, cwd=code, env=env)
    if job.returncode != 0:
        raise UpdateError(f"the rebuild of {model_name} version {recipe.version} failed (exit "
                          f"{job.returncode}); its log: {work / 'run' / 'train.log'}")  # fmt: skip
    run_id = _rebuilt_run(client, data)
    rebuilt = client.get_run(run_id)
    rows = metric_rows(recipe.metrics, dict(rebuilt.data.metrics))
    predictions = None
    if rebuilt.outputs.model_outputs:  # logged by log_model=true, or by registering
        mlflow.set_tracking_uri(tracking_uri)
        x = _test_inputs(cfg, client, recipe, data)
        rebuilt_uri = f"models:/{rebuilt.outputs.model_outputs[0].model_id}"
        original_uri = f"models:/{model_name}/{recipe.version}"
        predictions = prediction_diff(original_uri, rebuilt_uri, x)
    registered = _registered_version(client, model_name, run_id) if register else None
    differences = config_differences(logged_config(client, recipe.run_id),
                                     logged_config(client, run_id))  # fmt: skip
    result = Reproduction(recipe, run_id, rows, predictions, registered, differences)
    _record(client, result)
    return result


def _registered_version(client: MlflowClient, model_name: str, run_id: str) -> str | None:
    found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return str(found[0].version) if found else None


def _record(client: MlflowClient, result: Reproduction) -> None:
    """Tags on the rebuild's run, on the version rebuilt and on any new version."""
    recipe, matches = result.recipe, str(result.matches).lower()
    of = f"{recipe.model_name}/{recipe.version}"
    for key, value in {"mlops.run_type": RUN_TYPE, "reproduction.of": of,
                       "reproduction.matches": matches}.items():  # fmt: skip
        client.set_tag(result.run_id, key, value)
    client.set_model_version_tag(recipe.model_name, recipe.version, "reproduced.last_run_id",
                                 result.run_id)  # fmt: skip
    client.set_model_version_tag(recipe.model_name, recipe.version, "reproduced.matches", matches)
    if result.registered_version:
        client.set_model_version_tag(recipe.model_name, result.registered_version,
                                     "reproduction_of", recipe.version)  # fmt: skip


def reproduction_table(result: Reproduction):
    """Metric by metric: the version's, the rebuild's, and whether they are equal."""
    from rich.table import Table

    recipe = result.recipe
    table = Table(title=f"{recipe.model_name} version {recipe.version} rebuilt in run "
                        f"{result.run_id}")  # fmt: skip
    for column in ("metric", f"version {recipe.version}", "rebuilt", "difference", ""):
        table.add_column(column)
    for row in result.rows:
        difference = ("" if row.original is None or row.rebuilt is None
                      else f"{row.rebuilt - row.original:+.3g}")  # fmt: skip
        table.add_row(row.name, _number(row.original), _number(row.rebuilt), difference,
                      "equal" if row.equal else "DIFFERS")  # fmt: skip
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else repr(value)
