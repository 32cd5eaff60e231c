"""Gate, aliases, history, lineage and bad input against a real (temporary sqlite) store."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops.data.arrays import save_npz_reproducibly
from mlops.errors import DataError, RegistryError
from mlops.registry.aliases import ensure_reachable, promote, resolve_version, rollback
from mlops.registry.history import champion_stack, read_history
from pipelines.train import train
from tests.conftest import ROOT
from tests.registry_helpers import STRONG, WEAK, registry_state


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_gate_promotes_better_refuses_worse_and_honours_min_delta(
    make_cfg, tracking_uri: str
) -> None:
    client = MlflowClient(tracking_uri)
    name = "gate-test"
    first = train(make_cfg(*WEAK, f"registry.model_name={name}"))
    assert first.gate.decision.promote
    assert aliases(client, name) == {"champion": "1", "challenger": "1"}

    better = train(make_cfg(*STRONG, f"registry.model_name={name}"))
    assert better.gate.decision.promote, better.gate.decision.reason
    assert better.gate.champion.version == "1"
    assert aliases(client, name) == {"champion": "2", "challenger": "2"}

    worse = train(make_cfg(*WEAK, f"registry.model_name={name}"))
    assert not worse.gate.decision.promote
    assert aliases(client, name) == {"champion": "2", "challenger": "3"}

    # an identical retraining can only tie, and min_delta=0.5 is out of reach anyway
    same = train(make_cfg(*STRONG, f"registry.model_name={name}", "registry.gate.min_delta=0.5"))
    assert not same.gate.decision.promote
    assert "min_delta=0.5" in same.gate.decision.reason
    assert aliases(client, name)["champion"] == "2"

    # the verdict and both scores are on the version and on its evaluation run
    version = client.get_model_version(name, worse.model_version)
    assert version.tags["gate.decision"] == "rejected"
    assert float(version.tags["gate.challenger_score"]) == pytest.approx(
        worse.gate.challenger.metrics["test/acc"]
    )
    assert float(version.tags["gate.champion_score"]) == pytest.approx(
        better.gate.challenger.metrics["test/acc"]
    )
    assert version.tags["gate.champion_version"] == "2"
    assert version.tags["gate.data_md5"] == version.tags["data.dvc_md5"]
    assert version.tags["gate.data_matches_pin"] == "unknown"  # scored on a copy, untracked
    evaluation = client.get_run(version.tags["evaluation.run_id"])
    assert evaluation.data.tags["mlops.run_type"] == "evaluation"
    assert evaluation.data.tags["gate.decision"] == "rejected"
    assert evaluation.data.tags["model.version"] == worse.model_version
    # the gate's evaluations nest under the training that ran the gate, the champion's too
    assert evaluation.data.tags["mlflow.parentRunId"] == worse.run_id
    champion_evaluation = client.search_runs(
        [evaluation.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{worse.run_id}' and tags.`model.version` = '2'",
    )
    assert [r.data.tags["mlops.run_type"] for r in champion_evaluation] == ["evaluation"]
    assert {a.path for a in client.list_artifacts(evaluation.info.run_id, "plots")} == {
        "plots/confusion_matrix.png"
    }

    # history: challenger moves for all four, champion moves for the two promotions
    history = read_history(client, name)
    assert [(m.alias, m.from_version, m.to_version, m.kind) for m in history] == [
        ("challenger", None, "1", "trained"),
        ("champion", None, "1", "gate"),
        ("challenger", "1", "2", "trained"),
        ("champion", "1", "2", "gate"),
        ("challenger", "2", "3", "trained"),
        ("challenger", "3", "4", "trained"),
    ]
    assert history[3].scores["champion"] == pytest.approx(first.gate.challenger.metrics["test/acc"])
    assert [m.seq for m in history] == list(range(1, 7))


def test_evaluation_from_registry_matches_training(make_cfg, tracking_uri: str) -> None:
    result = train(make_cfg(*STRONG, "registry.model_name=eval-match"))
    assert result.gate.challenger.metrics["test/acc"] == pytest.approx(
        result.metrics["test/acc"], abs=1e-6
    )
    assert result.gate.challenger.metrics["test/f1"] == pytest.approx(
        result.metrics["test/f1"], abs=1e-5
    )


def test_manual_promote_and_rollback(make_cfg, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    name = "manual-test"
    train(make_cfg(*STRONG, f"registry.model_name={name}"))
    train(make_cfg(*WEAK, f"registry.model_name={name}"))  # rejected: champion stays 1
    move = promote(client, name, "2", reason="canary looked fine")
    assert (move.from_version, move.to_version, move.kind, move.reason) == (
        "1",
        "2",
        "manual",
        "canary looked fine",
    )
    assert aliases(client, name)["champion"] == "2"
    assert client.get_model_version(name, "2").tags["promotion.kind"] == "manual"

    back = rollback(client, name)
    assert (back.from_version, back.to_version, back.kind) == ("2", "1", "rollback")
    assert aliases(client, name)["champion"] == "1"
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(client, name)
    assert aliases(client, name)["champion"] == "1"
    assert [m.kind for m in read_history(client, name)][-2:] == ["manual", "rollback"]


def test_the_history_lives_on_the_versions_and_an_old_one_is_carried_over(
    tmp_path: Path,
) -> None:
    """The model page holds one summary tag, each version the moves to it; a history kept
    the old way (a registered-model tag per move) reads the same and moves onto its
    versions with the next move, one whose version is gone staying readable where it is."""
    import json

    from mlops.registry.history import LEGACY_TAG_PREFIX, SUMMARY_TAG, move_alias

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    name = "old-history"
    client.create_registered_model(name)
    for _ in range(3):  # versions 1..3 of a model logged anywhere (the source is not read)
        client.create_model_version(name, source=str(tmp_path), run_id=None)
    old = [(1, "champion", None, "1", "gate"), (2, "champion", "1", "3", "gate"),
           (3, "champion", "3", "2", "manual")]  # fmt: skip
    for seq, alias, before, to, kind in old:
        move = {"seq": seq, "time": f"2026-11-0{seq}T00:00:00+00:00", "alias": alias,
                "from_version": before, "to_version": to, "kind": kind, "reason": "old",
                "scores": {}, "data_md5": None}  # fmt: skip
        client.set_registered_model_tag(name, f"{LEGACY_TAG_PREFIX}{seq:06d}", json.dumps(move))
    client.set_registered_model_alias(name, "champion", "2")
    client.delete_model_version(name, "3")  # its move (#2) has nowhere to go
    before = read_history(client, name)
    assert [m.seq for m in before] == [1, 2, 3]

    move_alias(client, name, "champion", "1", "rollback", "back to 1")
    after = read_history(client, name)
    assert after[:3] == before and (after[3].seq, after[3].from_version) == (4, "2")
    tags = client.get_registered_model(name).tags
    assert set(tags) == {f"{LEGACY_TAG_PREFIX}000002", SUMMARY_TAG}
    assert tags[SUMMARY_TAG].startswith("4 moves; latest (#4, ")
    assert "@champion 2 -> 1 (rollback)" in tags[SUMMARY_TAG]
    assert sorted(k for k in client.get_model_version(name, "1").tags) == [
        "mlops.alias_move.000001", "mlops.alias_move.000004"]  # fmt: skip
    assert champion_stack(after) == ["1"]  # 2 was pushed by hand over the lost 3, then left


def test_lineage_on_every_version(make_cfg, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    result = train(make_cfg(*WEAK, "registry.model_name=lineage-test"))
    version = client.get_model_version("lineage-test", result.model_version)
    for key in (
        "git.commit",
        "git.dirty",
        "data.dvc_md5",
        "run_id",
        "evaluation.run_id",
        "gate.decision",
    ):
        assert version.tags[key], key
    run = client.get_run(version.run_id)
    freeze = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/environment/pip-freeze.txt")
    assert f"torch=={__import__('torch').__version__}" in freeze
    assert "mlflow==3.17.2" in freeze
    config = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/train.yaml")
    assert "model_name: lineage-test" in config


def test_bad_references_change_nothing(make_cfg, tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    name = "bad-ref-test"
    train(make_cfg(*WEAK, f"registry.model_name={name}"))
    before = registry_state(client, name)
    with pytest.raises(RegistryError, match="no registered model 'nope'") as missing:
        promote(client, "nope", "1")
    assert f"in {tracking_uri}; registered models: " in str(missing.value)
    assert name in str(missing.value)
    with pytest.raises(RegistryError, match="has no version 9"):
        promote(client, name, "9")
    with pytest.raises(RegistryError, match="has no alias 'gold'"):
        resolve_version(client, name, "@gold")
    with pytest.raises(RegistryError, match="no previous champion"):
        rollback(client, name)
    assert registry_state(client, name) == before


def test_version_that_does_not_fit_the_data_is_refused(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    from mlops import training

    client = MlflowClient(tracking_uri)
    name = "shape-test"
    train(make_cfg(*WEAK, f"registry.model_name={name}"))
    flat = tmp_path / "flat.npz"
    save_npz_reproducibly(flat, {"x": np.zeros((30, 64), np.float32), "y": np.arange(30) % 3})
    cfg = make_cfg(f"data.path={flat}")
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    before = registry_state(client, name)
    evaluator = training.evaluator_for(cfg, client, training.load_data(cfg))
    with pytest.raises(DataError, match=r"takes inputs shaped \(1, 8, 8\).*\(64,\)"):
        evaluator.evaluate(resolve_version(client, name, "1"))
    assert registry_state(client, name) == before
    assert (
        len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
        == runs_before
    )


def test_unreachable_server_fails_fast() -> None:
    with pytest.raises(RegistryError, match="unreachable"):
        ensure_reachable("http://127.0.0.1:9", timeout_s=2)


def run_cli(*args: str, tracking_uri: str) -> subprocess.CompletedProcess:
    """`mlops ...` in this process (what the console script calls), its output captured."""
    from mlops.cli import main

    argv = [*args, "--config-dir", str(ROOT / "conf"), f"logger.tracking_uri={tracking_uri}"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_cli_history_show_evaluate_and_errors(
    make_cfg, tracking_uri: str, digits_file: Path
) -> None:
    name = "cli-test"
    train(make_cfg(*WEAK, f"registry.model_name={name}"))
    history = run_cli("registry", "history", name, tracking_uri=tracking_uri)
    assert history.returncode == 0, history.stderr
    assert "champion" in history.stdout and "first version" in history.stdout
    show = run_cli("registry", "show", f"{name}@champion", tracking_uri=tracking_uri)
    assert show.returncode == 0, show.stderr
    # the table folds long values (paths) over lines: compare without layout
    shown = re.sub(r"[\s│]", "", show.stdout)
    assert "gitcommit" in shown and "pip-freeze.txt" in shown
    assert "datamatchespin" in shown
    assert "classes0,1,2,3,4,5,6,7,8,9" in shown  # as the MLmodel metadata lists them
    assert str(digits_file) in shown  # the file the version was trained on
    evaluate = run_cli(
        "evaluate", name, "--version", "1", f"data.path={digits_file}", tracking_uri=tracking_uri
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert "test/acc = " in evaluate.stdout

    bad = run_cli("registry", "promote", name, "@gold", tracking_uri=tracking_uri)
    assert bad.returncode == 1
    assert (
        bad.stderr.strip().splitlines()[-1]
        == f"mlops: error: {name} has no alias 'gold'; aliases: @challenger -> 1, @champion -> 1"
    )


def test_cli_evaluate_scores_a_version_on_the_data_it_was_trained_on(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri)
    name = "own-data-test"
    flat = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = (rng.normal(size=(90, 6)) + y[:, None]).astype(np.float32)
    save_npz_reproducibly(flat, {"x": x, "y": y})
    train(
        make_cfg("model=mlp", f"data.path={flat}", "data.name=flat", f"registry.model_name={name}")
    )
    x[0, 0] += 1  # the file changes after training: scored anyway, with a warning
    save_npz_reproducibly(flat, {"x": x, "y": y})

    evaluate = run_cli("evaluate", name, tracking_uri=tracking_uri)  # no data overrides
    assert evaluate.returncode == 0, evaluate.stderr
    assert f"warning: {flat} has changed since version 1 was trained" in evaluate.stdout
    assert f"on {flat} (the data version 1 was trained on;" in evaluate.stdout
    run = client.get_run(evaluate.stdout.split(" in run ")[1].split()[0])
    assert run.data.tags["data.file"] == str(flat)
    assert client.get_experiment(run.info.experiment_id).name == "flat"
    assert client.get_model_version(name, "1").tags["evaluation.data_file"] == str(flat)


def test_cli_evaluate_on_another_file_keeps_the_training_data_config_and_its_labels(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    """`data.path=...` alone changes only the file: the label column of the training run's
    data config still applies, and labels are matched to the model's by name, also in a
    file that lacks one of the classes (which numbers the others differently)."""
    name = "named-labels"
    rng = np.random.default_rng(0)
    kinds = np.array(["ant", "bee", "cat"])[np.arange(120) % 3]
    x = rng.normal(size=(120, 4)) + (np.arange(120) % 3)[:, None] * 3
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(kind=kinds)
    frame.to_csv(trained_on := tmp_path / "kinds.csv", index=False)
    train(make_cfg("model=mlp", "data=files", "data.name=kinds", f"data.path={trained_on}",
                   "data.label_column=kind", f"registry.model_name={name}",
                   "trainer.max_epochs=30"))  # fmt: skip
    frame[frame.kind != "ant"].to_csv(two := tmp_path / "two.csv", index=False)
    frame.assign(kind=frame.kind.replace("ant", "owl")).to_csv(owl := tmp_path / "owl.csv",
                                                                index=False)  # fmt: skip

    evaluate = run_cli("evaluate", name, f"data.path={two}", tracking_uri=tracking_uri)
    assert evaluate.returncode == 0, evaluate.stderr
    assert f"(the data version 1 was trained on, with data.path={two};" in evaluate.stdout
    accuracy = float(evaluate.stdout.split("test/acc = ")[1].split()[0])
    assert accuracy > 0.9  # bee and cat scored as the model's bee and cat, not ant and bee
    refused = run_cli("evaluate", name, f"data.path={owl}", tracking_uri=tracking_uri)
    assert refused.returncode == 1
    assert "label(s) 'owl' that named-labels version 1 does not predict" in refused.stderr


def test_a_version_whose_run_is_gone_is_scored_on_the_configured_data(
    make_cfg, tracking_uri: str
) -> None:
    from mlflow.entities.model_registry import ModelVersion

    from mlops.registry.evaluate import training_md5, with_training_data

    client = MlflowClient(tracking_uri)
    orphan = ModelVersion("orphan", "1", 0, run_id="0" * 32)  # its run was garbage-collected
    assert training_md5(client, orphan) is None
    assert with_training_data(make_cfg(), client, orphan) is None


def test_gate_keeps_a_champion_it_cannot_score_on_new_data(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri)
    name = "changed-data-test"
    train(make_cfg(*WEAK, f"registry.model_name={name}"))
    flat = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    save_npz_reproducibly(
        flat, {"x": (rng.normal(size=(90, 6)) + y[:, None]).astype(np.float32), "y": y}
    )
    result = train(make_cfg("model=mlp", f"data.path={flat}", f"registry.model_name={name}"))
    assert not result.gate.decision.promote
    assert "champion v1 cannot be scored on this data" in result.gate.decision.reason
    assert aliases(client, name) == {"champion": "1", "challenger": "2"}
    assert client.get_model_version(name, "2").tags["gate.decision"] == "rejected"
