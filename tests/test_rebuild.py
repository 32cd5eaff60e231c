"""`mlops reproduce` and `mlops retrain`: a version rebuilt from its lineage alone, and the
next one from its recipe, in a git project of its own (a copy of this one, committed),
trained by the real pipeline in subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mlops.cli import main
from mlops.data.versioning import check_against_pin
from mlops.errors import UpdateError
from mlops.monitoring.payloads import PayloadLog, read_payloads
from mlops.rebuild.data_bytes import cache_object, training_bytes
from mlops.rebuild.recipe import recipe_of
from mlops.registry.history import read_history
from mlops.registry.show import reproduction_rows
from tests.conftest import FAST, ROOT

OVERRIDES = ["model=rnn", "model.cell=lstm", "seed=3"]
# enough training that the predictions compared are not all one class
TRAINING = [o for o in FAST if not o.startswith(("trainer.max_epochs", "+trainer.limit_train"))]
TRAINING += ["trainer.max_epochs=3", "+trainer.limit_train_batches=20"]
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True,
                          text=True, env={**os.environ, **GIT}).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This project's code, config and pinned data in a repository of its own, committed,
    with the data in its DVC cache, and one version trained with OVERRIDES."""
    project = tmp_path_factory.mktemp("project")
    for folder in ("src", "pipelines", "conf"):
        shutil.copytree(ROOT / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for name in ("pyproject.toml", "data.dvc", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, project / name)
    (project / ".dvc").mkdir()
    for name in ("config", ".gitignore"):
        shutil.copy(ROOT / ".dvc" / name, project / ".dvc" / name)
    shutil.copytree(ROOT / "data", project / "data")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "v1")
    assert check_against_pin(project / "data.dvc").matches  # fills the project's DVC cache
    train(project, *OVERRIDES)
    return project


def tracking(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def train(project: Path, *overrides: str) -> None:
    job = subprocess.run(
        [sys.executable, "pipelines/train.py", *overrides, *TRAINING,
         f"logger.tracking_uri={tracking(project)}"],
        cwd=project, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": f"{project / 'src'}{os.pathsep}{project}"},
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]


def reproduce(project: Path, *args: str) -> int:
    config = ["--config-dir", str(project / "conf"), f"paths.root_dir={project}",
              f"logger.tracking_uri={tracking(project)}"]  # fmt: skip
    return main(["reproduce", "digits-rnn", *args, *config])


def test_a_version_trained_with_overrides_is_rebuilt_equal_from_its_commit_and_data(
    project: Path, capsys
) -> None:
    """The rebuild replays the overrides on the version's commit (a worktree once the
    checkout has moved on: here its RNN default changed) and the bytes its run read (data/
    now holds others): equal test metrics and predictions, a run tagged a reproduction,
    no new version."""
    client = MlflowClient(tracking(project))
    rnn = project / "conf" / "model" / "rnn.yaml"
    rnn.write_text(rnn.read_text().replace("hidden_size: 128", "hidden_size: 16"))
    assert "hidden_size: 16" in rnn.read_text()
    git(project, "checkout", "-qb", "moved-on")  # back to the first branch afterwards
    git(project, "commit", "-qam", "a smaller RNN by default")
    data = project / "data" / "digits" / "digits.npz"
    pinned = data.read_bytes()
    data.write_bytes(pinned[:-10] + b"0123456789")  # what data/ holds now is not the recipe
    try:
        assert reproduce(project, "--version", "1") == 0
    finally:
        data.write_bytes(pinned)
        git(project, "checkout", "-q", "-")
    out = capsys.readouterr().out
    assert "reproduced: digits-rnn version 1 rebuilt from its lineage matches it" in out
    assert "test predictions equal, probabilities to the bit" in out
    assert "resolved config: equal to the version's" in out
    assert "DIFFERS" not in out
    assert float(re.search(r"test/acc +│ ([\d.]+)", out).group(1)) > 0.5  # a trained model
    (run,) = client.search_runs(["0", *[e.experiment_id for e in client.search_experiments()]],
                                "tags.`mlops.run_type` = 'reproduction'")  # fmt: skip
    assert run.data.tags["reproduction.of"] == "digits-rnn/1"
    assert run.data.tags["git.commit"] == client.get_model_version("digits-rnn", "1").tags[
        "git.commit"]  # fmt: skip
    original = client.get_run(client.get_model_version("digits-rnn", "1").run_id)
    assert run.data.metrics["test/acc"] == original.data.metrics["test/acc"]
    assert run.data.params["model/cell"] == "lstm" and run.data.params["seed"] == "3"
    assert (
        run.data.params["model/hidden_size"] == original.data.params["model/hidden_size"] == "128"
    )
    assert len(client.search_model_versions("name = 'digits-rnn'")) == 1  # none registered
    version = client.get_model_version("digits-rnn", "1")
    assert version.tags["reproduced.matches"] == "true"
    assert version.tags["reproduced.last_run_id"] == run.info.run_id
    assert "code" not in os.listdir(next((project / "outputs" / "rebuild").iterdir()))
    capsys.readouterr()
    assert main(["registry", "history", "digits-rnn", "--config-dir", str(project / "conf"),
                 f"logger.tracking_uri={tracking(project)}"]) == 0  # fmt: skip
    assert "reproduced" in capsys.readouterr().out
    ((_, row),) = reproduction_rows(client, "digits-rnn")  # what the history table lists
    assert row[3:7] == ["1", "-", "reproduced",
                        f"rebuilt from its lineage in run {run.info.run_id}: matches"]  # fmt: skip


def test_bytes_gone_from_cache_and_remote_or_no_lineage_are_refused_creating_nothing(
    project: Path, capsys
) -> None:
    """The version's data bytes neither in the DVC cache nor on the remote; a version
    trained from a dirty tree; an unknown version: one line each, no run, no version."""
    client = MlflowClient(tracking(project))
    recipe = recipe_of(client, "digits-rnn", "1")

    def runs() -> int:
        return len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    before = runs()
    cached = cache_object(project, recipe.data_md5)
    kept = cached.read_bytes()
    cached.unlink()
    try:
        assert reproduce(project, "--version", "1") == 1
    finally:
        cached.write_bytes(kept)
    (line,) = capsys.readouterr().err.splitlines()
    assert f"md5 {recipe.data_md5}: those bytes are not in the DVC cache" in line, line
    assert "Nothing was created" in line
    client.set_model_version_tag("digits-rnn", "1", "git.dirty", "true")
    try:
        assert reproduce(project, "--version", "1") == 1
    finally:
        client.set_model_version_tag("digits-rnn", "1", "git.dirty", "false")
    (line,) = capsys.readouterr().err.splitlines()
    assert "uncommitted changes (git.dirty=true)" in line, line
    assert reproduce(project, "--version", "7") == 1
    assert "version 7" in capsys.readouterr().err
    assert runs() == before
    assert len(client.search_model_versions("name = 'digits-rnn'")) == 1


def test_bytes_missing_from_the_cache_are_fetched_from_the_dvc_remote(
    project: Path, tmp_path: Path
) -> None:
    """`dvc push`ed, then dropped from the cache: DVC fetches them as the version's commit
    pins them, and they are checked against the run's md5."""
    from dvc.repo import Repo

    client = MlflowClient(tracking(project))
    recipe = recipe_of(client, "digits-rnn", "1")
    with Repo(str(project)) as repo:
        repo.push()
    cached = cache_object(project, recipe.data_md5)
    kept = cached.read_bytes()
    cached.unlink()
    try:
        fetched = training_bytes(project, recipe, tmp_path)
    finally:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(kept)
    assert fetched.read_bytes() == kept and fetched.name == "digits.npz"
    overrides = client.get_model_version("digits-rnn", "1").tags["hydra.overrides"]
    client.delete_model_version_tag("digits-rnn", "1", "hydra.overrides")
    try:
        with pytest.raises(UpdateError, match=r"missing tags: hydra\.overrides"):
            recipe_of(client, "digits-rnn", "1")
    finally:
        client.set_model_version_tag("digits-rnn", "1", "hydra.overrides", overrides)


def retrain(project: Path, *args: str) -> int:
    config = ["--config-dir", str(project / "conf"), f"paths.root_dir={project}",
              f"logger.tracking_uri={tracking(project)}"]  # fmt: skip
    return main(["retrain", "digits-rnn", *args, *config])


def log_fed_back_answers(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """What a served digits-rnn v1 logs: each answer's input and request id, then the
    label production sent back for it (the service's own payload writer)."""
    log = PayloadLog(folder, "digits-rnn", "1", sample_rate=1.0, flush_s=0.05)
    for n, (sample, label) in enumerate(zip(x, y, strict=True)):
        log.put({"kind": "prediction", "time": 1000.0 + n, "request_id": f"r{n}", "index": 0,
                 "label": 0, "confidence": 0.5, "input": sample})  # fmt: skip
        log.put({"kind": "feedback", "time": 2000.0 + n, "request_id": f"r{n}", "index": 0,
                 "label": int(label), "outcome": "wrong"})  # fmt: skip
    log.close()


def test_retrain_with_fed_back_labels_registers_the_next_version_through_the_gate(
    project: Path, capsys
) -> None:
    """The parent's recipe with an override on top, its data plus 140 fed-back samples as a
    new data version (data.dvc updated, the git command printed), the newest 60 kept as
    the recent window; version 2 tagged retrained_from=1, the gate's decision consistent
    with both scores, the history's challenger move a retrain."""
    client = MlflowClient(tracking(project))
    arrays = np.load(project / "data" / "digits" / "digits.npz")
    log_fed_back_answers(project / "payloads", arrays["x_val"][:200], arrays["y_val"][:200])
    pinned = (project / "data.dvc").read_text()
    assert retrain(project, "--with-feedback", "trainer.max_epochs=4") == 0
    out = capsys.readouterr().out
    assert "retrained digits-rnn version 1 as version 2" in out
    assert "140 fed-back samples trained on, 60 kept as the recent window" in out
    assert "record it: git add data.dvc && git commit" in out
    assert (project / "data.dvc").read_text() != pinned  # a new data version, pinned
    version = client.get_model_version("digits-rnn", "2")
    tags = version.tags
    assert tags["retrained_from"] == "1" and tags["retrain.feedback_samples"] == "140"
    assert tags["retrain.overrides"] == "trainer.max_epochs=4"
    trained_on = Path(tags["data.file"])
    assert trained_on.parent == project / "data" / "digits" and "+feedback-digits-rnn-v1" in (
        trained_on.name)  # fmt: skip
    with np.load(trained_on) as new:
        assert len(new["y"]) == len(arrays["y"]) + 140
        assert np.array_equal(new["x_test"], arrays["x_test"])  # the pinned test split
    run = client.get_run(version.run_id)
    assert run.data.params["trainer/max_epochs"] == "4" and run.data.params["seed"] == "3"
    assert tags["retrain.window_samples"] == "60"
    won = float(tags["retrain.window_accuracy"]) > float(tags["retrain.window_champion_accuracy"])
    held = tags["retrain.gate_test_held"] == "true"
    assert tags["gate.decision"] == ("promoted" if won and held else "rejected"), tags
    assert "on the 60 most recent fed-back samples" in tags["gate.reason"]
    champion = str(client.get_registered_model("digits-rnn").aliases["champion"])
    assert champion == ("2" if won and held else "1")
    move = read_history(client, "digits-rnn")[-1 if not (won and held) else -2]
    assert move.kind == "retrained" and move.reason.startswith("retrained from version 1 in run")


def test_retrain_refuses_conflicting_overrides_and_waits_for_drift(project: Path, capsys) -> None:
    """Two values for one key, a key the retrain sets itself: one line, nothing trained;
    --if-drift without a report that found drift does nothing and says why."""
    client = MlflowClient(tracking(project))
    versions = len(client.search_model_versions("name = 'digits-rnn'"))
    assert retrain(project, "seed=1", "seed=2") == 1
    assert "conflicting overrides seed=1 and seed=2" in capsys.readouterr().err
    assert retrain(project, "register=false") == 1
    assert "sets register itself" in capsys.readouterr().err
    assert retrain(project, "--version", "1", "--if-drift") == 0
    assert "nothing to do: no monitoring report of digits-rnn version 1 found drift" in (
        capsys.readouterr().out)  # fmt: skip
    assert len(client.search_model_versions("name = 'digits-rnn'")) == versions


def test_drift_found_in_served_traffic_retrains_promotes_and_serves_the_next_version(
    project: Path, tmp_path: Path, capsys
) -> None:
    """End to end over HTTP: v1 trained on the digits as they are serves digits moved one
    pixel right, which production labels through /feedback; the monitoring report finds
    the drift (exit 3); `retrain --with-feedback --if-drift` trains v2 on them, the retrain
    gate promotes it, and the next deploy serves v2; tags and history tell the story."""
    import bentoml

    from mlops.config import compose_config
    from mlops.serving.deploy import deploy
    from tests.served import get, post, predict_with_id, ready_within
    from tests.servers import free_port

    name = "moving-digits"
    train(project, "model=mlp", f"registry.model_name={name}")
    client = MlflowClient(tracking(project))
    where = [f"paths.root_dir={project}", f"logger.tracking_uri={tracking(project)}"]
    cfg = compose_config(project / "conf", [
        *where, f"paths.bento_build_dir={tmp_path / 'build'}", "deploy.compile=false",
        "deploy.payload_sample_rate=1.0",
    ])  # fmt: skip
    arrays = np.load(project / "data" / "digits" / "digits.npz")
    x = np.roll(np.concatenate([arrays["x_test"], arrays["x_val"]]), 1, axis=-1)  # 540
    y = np.concatenate([arrays["y_test"], arrays["y_val"]])

    def serve(version: str):
        deployed = deploy(cfg, name, "@champion")
        assert deployed.deployment.model_version == version
        server = bentoml.serve(deployed.bento_tag, port=free_port(), host="127.0.0.1")
        ready_within(f"{server.url}/readyz", 120)
        return server

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # deploy names its own
    right = 0
    with serve("1") as server:
        for start in range(0, len(x), 60):
            answers, request_id = predict_with_id(server.url, x[start : start + 60])
            truth = y[start : start + 60]
            right += sum(a["label"] == int(t) for a, t in zip(answers, truth, strict=True))
            items = [{"request_id": request_id, "index": i, "label": int(t)}
                     for i, t in enumerate(truth)]  # fmt: skip
            assert post(server.url, {"items": items}, "/feedback")[0] == 200
        deadline = time.monotonic() + 20  # the workers' log threads write once a second
        while len(list(read_payloads(project / "payloads", name, "1"))) < 2 * len(x):
            assert time.monotonic() < deadline, "the payload log did not get every record"
            time.sleep(0.5)
    config = ["--config-dir", str(project / "conf"), *where]
    assert main(["monitor", "report", name, "--version", "1",
                 "--payload-dir", str(project / "payloads"), *config]) == 3  # fmt: skip
    capsys.readouterr()
    assert main(["retrain", name, "--with-feedback", "--if-drift",
                 "registry.gate.min_delta=0.02", *config]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "retraining: monitoring report" in out and "found drift" in out
    assert "gate: promoted to @champion" in out, out
    tags = client.get_model_version(name, "2").tags
    assert tags["retrained_from"] == "1" and tags["retrain.feedback_samples"] == "378"
    assert tags["retrain.window_samples"] == "162" and tags["gate.decision"] == "promoted"
    assert float(tags["retrain.window_accuracy"]) > float(
        tags["retrain.window_champion_accuracy"])  # fmt: skip
    assert client.get_model_version(name, "1").tags["monitoring.last_report_drift"] == "true"
    with serve("2") as server:
        assert json.loads(get(server.url, "/metadata")[1])["model_version"] == "2"
        status, answers = post(server.url, {"inputs": x[-162:].tolist()})
        assert status == 200
        v2_right = sum(a["label"] == int(t) for a, t in zip(answers, y[-162:], strict=True))
    assert v2_right / 162 == pytest.approx(float(tags["retrain.window_accuracy"]))
    moves = [(m.alias, m.to_version, m.kind) for m in read_history(client, name)]
    assert moves[-2:] == [("challenger", "2", "retrained"), ("champion", "2", "gate")]
    assert right / len(x) < float(tags["retrain.window_accuracy"])  # v1 on the moved digits


def test_the_rebuild_replays_the_recipe_not_where_it_ran(tmp_path: Path) -> None:
    """The overrides replayed are the recipe's: where the data, store and outputs were is
    the rebuild's own; asked to register, the pipeline registers (and gates) it; else it
    logs the model alone where the commit's pipeline can."""
    from mlops.rebuild.recipe import Recipe
    from mlops.rebuild.reproduce import rebuild_command

    recipe = Recipe("m", "3", "r", "c", "data/d.npz", "0" * 32, (
        "model=rnn", "seed=3", "data.path=/old/d.npz", "logger.tracking_uri=sqlite:///old.db",
        "paths.output_dir=/old/out", "hydra.run.dir=/old/run", "register=false",
    ), {})  # fmt: skip
    data, run = tmp_path / "d.npz", tmp_path / "run"
    asked = rebuild_command(recipe, ROOT, data, "sqlite:///new.db", tmp_path, run, register=True)
    assert asked[2:4] == ["model=rnn", "seed=3"]
    assert not [o for o in asked if "/old" in o or o == "register=false" or "log_model" in o]
    assert {f"data.path={data}", "logger.tracking_uri=sqlite:///new.db", "register=true",
            f"hydra.run.dir={run}"} <= set(asked)  # fmt: skip
    plain = rebuild_command(recipe, ROOT, data, "sqlite:///new.db", tmp_path, run, register=False)
    assert "register=false" in plain and "log_model=true" in plain
    older = rebuild_command(recipe, tmp_path, data, "x", tmp_path, run, register=False)
    assert "log_model=true" not in older  # a commit whose conf/train.yaml has no log_model


def test_config_differences_name_each_key_the_runs_disagree_on_placement_aside() -> None:
    from mlops.rebuild.compare import config_differences

    original = {"paths": {"root_dir": "/a"}, "seed": 3, "model": {"cell": "lstm"},
                "data": {"path": "/a/d.npz"}, "deploy": {"keys": "/a/.keys"}}  # fmt: skip
    rebuilt = {"paths": {"root_dir": "/wt"}, "seed": 3, "model": {"cell": "gru", "extra": 1},
               "data": {"path": "/tmp/d.npz"}, "deploy": {"keys": "/wt/.keys"}}  # fmt: skip
    assert config_differences(original, rebuilt) == [
        "model.cell: 'lstm' -> 'gru'", "model.extra: '(unset)' -> 1"]  # fmt: skip
    assert config_differences(original, None) == []
