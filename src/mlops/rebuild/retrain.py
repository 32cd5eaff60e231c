"""`mlops retrain MODEL` (make retrain): the next version from a registered one's recipe
(its overrides, with any given here on top) on new data: the data as the checkout holds
it now, a file named by `data.path=...`, and/or production's fed-back labels added as a
new data version. Trained by this checkout's pipeline, registered tagged `retrained_from`,
then through the retrain gate (mlops.rebuild.retrain_gate)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from omegaconf import DictConfig

from mlops.errors import UpdateError
from mlops.messages import tell
from mlops.rebuild.data_version import feedback_file_name, record_data_version, with_samples
from mlops.rebuild.fed_back import labelled_samples, split_window
from mlops.rebuild.recipe import (
    SET_BY_REBUILD,
    Recipe,
    is_placement,
    override_key,
    recipe_of,
    replayed_overrides,
)
from mlops.rebuild.reproduce import absolute_tracking_uri
from mlops.rebuild.retrain_gate import retrain_judge
from mlops.registry.promotion import GateOutcome


@dataclass(frozen=True)
class Retrain:
    parent: Recipe
    version: str  # the new version
    run_id: str
    data_file: Path
    feedback_samples: int  # fed-back samples added to the training data
    window_samples: int  # kept out of it, the gate's recent window
    commit_hint: str | None  # the git command that records a new data version
    gate: GateOutcome


def drift_reason(client: MlflowClient, model_name: str, version: str) -> str | None:
    """Why `--if-drift` retrains (the version's last monitoring report found drift or an
    accuracy drop), or None with nothing to do; the reason is printed either way."""
    tags = client.get_model_version(model_name, version).tags
    report = tags.get("monitoring.last_report_run_id")
    if report is None:
        return None
    return f"monitoring report {report} found drift" if tags.get(
        "monitoring.last_report_drift") == "true" else None  # fmt: skip


def placement(override: str) -> bool:
    """Whether an override says where things are, not how to train: it configures this
    command and the training alike, never the recipe."""
    return is_placement(override_key(override))


def recipe_changes(given: list[str]) -> list[str]:
    """The overrides given that change the recipe; a key given twice with two values, or
    one the retrain sets itself, is refused."""
    seen: dict[str, str] = {}
    for override in given:
        key = override_key(override)
        if key in seen and seen[key] != override:
            raise UpdateError(f"conflicting overrides {seen[key]} and {override}: give each key "
                              "once; nothing was trained")  # fmt: skip
        if key in SET_BY_REBUILD and key not in ("data.path", "logger.tracking_uri"):
            raise UpdateError(f"{override}: mlops retrain sets {key} itself (it registers the "
                              "result and gates it); nothing was trained")  # fmt: skip
        seen[key] = override
    return [o for o in given if not placement(o)]


def merged_overrides(recipe: Recipe, given: list[str]) -> list[str]:
    """The parent's overrides, each key given here replaced by the new value, then the
    given placements (less the store, which the retrain names itself)."""
    changes = recipe_changes(given)
    keys = {override_key(o) for o in changes}
    kept = [o for o in replayed_overrides(recipe) if override_key(o) not in keys]
    places = [o for o in given if placement(o) and override_key(o) != "logger.tracking_uri"]
    return kept + [o for o in changes if override_key(o) != "data.path"] + places


def _base_data(root: Path, recipe: Recipe, given: list[str]) -> Path:
    """The data to retrain on: `data.path=...` when given, else the parent's file as the
    checkout holds it now (the current data.dvc version)."""
    named = [o.split("=", 1)[1] for o in given if override_key(o) == "data.path" and "=" in o]
    path = Path(named[-1] if named else recipe.data_file)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise UpdateError(f"no data file {path} to retrain on: `make data`, or name one with "
                          "data.path=...; nothing was trained")  # fmt: skip
    return path.resolve()


def retrain(
    cfg: DictConfig, client: MlflowClient, model_name: str, ref: str, given: list[str],
    with_feedback: bool = False, since: float = 0.0,
) -> Retrain:  # fmt: skip
    recipe = recipe_of(client, model_name, ref, need_clean_tree=False)
    overrides = merged_overrides(recipe, given)
    root = Path(cfg.paths.root_dir).resolve()
    data = _base_data(root, recipe, given)
    settings = cfg.rebuild.retrain
    window, added, hint = None, 0, None
    if with_feedback:
        samples = labelled_samples(Path(cfg.paths.payload_dir), model_name, recipe.version, since)
        if not len(samples):
            raise UpdateError(
                f"no fed-back labels for {model_name} version {recipe.version} in "
                f"{cfg.paths.payload_dir}: serve it with deploy.payload_sample_rate above 0 "
                "and POST labels to /feedback, or retrain without --with-feedback"
            )
        training, window = split_window(samples, float(settings.window_share),
                                        int(settings.min_window_samples))  # fmt: skip
        data = with_samples(data, training, feedback_file_name(data, model_name, recipe.version))
        added = len(training)
        hint = record_data_version(Path(cfg.paths.dvc_file), data)
    work = Path(cfg.rebuild.work_dir).resolve() / (
        f"retrain-{model_name}-v{recipe.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    tracking_uri = absolute_tracking_uri(str(cfg.logger.tracking_uri))
    command = [sys.executable, str(root / "pipelines" / "train.py"), *overrides,
               f"data.path={data}", f"logger.tracking_uri={tracking_uri}",
               f"paths.mlflow_artifacts_dir={Path(cfg.paths.mlflow_artifacts_dir).resolve()}",
               f"hydra.run.dir={work / 'run'}", "registry.gate.enabled=false"]  # fmt: skip
    tell(f"retraining {model_name} version {recipe.version} on {data}"
         + (f" ({added} fed-back samples added)" if added else "")
         + f", overrides: {' '.join(overrides) or '(none)'}")  # fmt: skip
    job = subprocess.run(command, cwd=root, env={**os.environ})
    if job.returncode != 0:
        raise UpdateError(f"the retraining failed (exit {job.returncode}); its log: "
                          f"{work / 'run' / 'train.log'}")  # fmt: skip
    run_id, version = _new_version(client, model_name, work / "run")
    for key, value in {"retrained_from": recipe.version,
                       "retrain.overrides": " ".join(recipe_changes(given)) or "(none)",
                       "retrain.feedback_samples": str(added)}.items():  # fmt: skip
        client.set_model_version_tag(model_name, version, key, value)
        client.set_tag(run_id, key, value)
    why = f"retrained from version {recipe.version} in run {run_id}"
    gate = _gate(cfg, client, model_name, version, window, why)
    return Retrain(recipe, version, run_id, data, added, len(window) if window else 0, hint, gate)


def _new_version(client: MlflowClient, model_name: str, run_dir: Path) -> tuple[str, str]:
    """The run of the retraining (its output folder is this one's) and its version."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"params.`paths/output_dir` = '{run_dir}'")
    found = runs and client.search_model_versions(
        f"name = '{model_name}' and run_id = '{runs[0].info.run_id}'"
    )
    if not found:
        raise UpdateError(f"the retraining in {run_dir} registered no version of {model_name}")
    return runs[0].info.run_id, str(found[0].version)


def _gate(
    cfg: DictConfig, client: MlflowClient, model_name: str, version: str, window, why: str
) -> GateOutcome:
    """The retrain gate on the new version's own test split (the pinned one: fed-back
    samples only ever join the training split) and the recent window."""
    from mlops import training
    from mlops.registry.evaluate import with_training_data
    from mlops.registry.promotion import run_gate

    new = client.get_model_version(model_name, version)
    chosen = with_training_data(cfg, client, new) or cfg
    datamodule = training.load_data(chosen)
    evaluator = training.evaluator_for(chosen, client, datamodule, parent_run_id=new.run_id)
    rule = training.gate_rule(cfg)
    return run_gate(client, model_name, version, rule, evaluator,
                    judge=retrain_judge(rule, window), challenger_kind="retrained",
                    challenger_reason=why)  # fmt: skip
