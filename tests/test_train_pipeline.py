"""The real training pipeline, a few batches per family, against a temporary sqlite store."""

from __future__ import annotations

import random
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate

from mlops import training
from mlops.data.arrays import save_npz_reproducibly
from mlops.errors import DataError, LaunchError, ModelConfigError
from mlops.models.mlp import MLP
from mlops.monitoring.reference import load_reference
from mlops.tracking.lineage import dvc_data_hash, file_md5
from mlops.tracking.run import build_mlflow_logger
from mlops.tracking.sweep import SweepJob
from pipelines.train import train
from tests.conftest import BEST_IS_NOT_LAST, ROOT, compose_config
from tests.registry_helpers import check_registered_from_best_checkpoint


def artifact_paths(client: mlflow.MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.parametrize(
    ("overrides", "family"),
    [(["model=mlp"], "mlp"), (["model=cnn"], "cnn"), (["model=rnn", "model.cell=lstm"], "rnn")],
)
def test_training_is_one_tracked_run_and_one_new_version(
    make_cfg,
    tracking_uri: str,
    digits_file: Path,
    tmp_path: Path,
    overrides: list[str],
    family: str,
) -> None:
    cfg = make_cfg(*overrides, "tags=[smoke]")
    result = train(cfg)
    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)

    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "digits"
    assert (
        len(
            client.search_runs(
                [run.info.experiment_id],
                f"tags.`model.family` = '{family}' and attributes.run_id = '{result.run_id}'",
            )
        )
        == 1
    )

    # params: the resolved config, flattened
    params = run.data.params
    assert params["model/_target_"] == cfg.model._target_
    assert params["trainer/max_epochs"] == "2"
    assert params["seed"] == "42"
    assert params["optimizer/lr"] == str(cfg.optimizer.lr)

    # metrics: per epoch for train/val, once for test
    for key in (
        "train/loss",
        "train/acc",
        "train/samples_per_sec",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/acc_best",
    ):
        assert len(client.get_metric_history(result.run_id, key)) == 2, key
    for key in ("test/acc", "test/f1", "test/loss"):
        assert key in run.data.metrics
        assert run.data.metrics[key] == pytest.approx(result.metrics[key])
    assert 0.0 <= run.data.metrics["test/acc"] <= 1.0
    # what a sweeper optimizes: the best validation accuracy, never a test metric
    val_acc = [m.value for m in client.get_metric_history(result.run_id, "val/acc")]
    assert training.optimized_value(cfg, result.metrics) == pytest.approx(max(val_acc))

    # artifacts: config, best checkpoint, plots
    artifacts = artifact_paths(client, result.run_id)
    assert {
        "config/train.yaml",
        "best/best.ckpt",
        "plots/confusion_matrix.png",
        "plots/learning_curves.png",
    } <= artifacts
    logged_config = yaml.safe_load(
        mlflow.artifacts.load_text(f"{run.info.artifact_uri}/config/train.yaml")
    )
    assert logged_config["model"]["_target_"] == cfg.model._target_
    assert logged_config["data"]["path"] == str(digits_file)

    # lineage tags
    tags = run.data.tags
    assert tags["model.family"] == family
    assert tags["data.dvc_md5"] == dvc_data_hash(ROOT / "data.dvc") != "unknown"
    assert tags["data.file_md5"] == file_md5(digits_file)
    assert tags["data.matches_pin"] == "unknown"  # a copy outside the project, untracked
    assert tags["git.commit"] == tags["mlflow.source.git.commit"]
    assert tags["git.dirty"] in {"true", "false", "unknown"}
    assert tags["tags"] == "smoke"

    # registered version: named data-family, lineage repeated, loadable with a signature
    assert result.model_name == f"digits-{family}"
    version = client.get_model_version(result.model_name, result.model_version)
    assert version.run_id == result.run_id
    assert version.tags["run_id"] == result.run_id
    assert version.tags["data.dvc_md5"] == tags["data.dvc_md5"]
    assert version.tags["data.matches_pin"] == "unknown"
    assert version.tags["git.commit"] == tags["git.commit"]
    # the UI's model pages describe the version and the registered model
    assert version.description.startswith(f"{family} trained on {digits_file} (md5 ")
    assert f"run {result.run_id[:8]}; test/acc={result.metrics['test/acc']:.4f}" in (
        version.description
    )
    description = client.get_registered_model(result.model_name).description
    assert f"make deploy MODEL={result.model_name}" in description
    # the monitoring reference: linked from the version, digested, made from the splits
    profile, why = load_reference(client, version)
    assert profile is not None, why
    assert "reference/sample.npz" in artifacts
    assert profile["sample_shape"] == [1, 8, 8] and profile["samples"] == 1257
    assert len(profile["projection"]["bins"]) == 4  # images: principal components
    assert sum(profile["class_priors"].values()) == pytest.approx(1.0)
    confidence = profile["confidence"]
    assert sum(confidence["shares"]) == pytest.approx(1.0) and confidence["samples"] == 270
    assert 0.0 <= confidence["accuracy"] <= 1.0
    model = mlflow.pyfunc.load_model(f"models:/{result.model_name}/{result.model_version}")
    assert tuple(model.metadata.signature.inputs.inputs[0].shape) == (-1, 1, 8, 8)
    x_test = np.load(digits_file)["x_test"][:9]
    probabilities = model.predict(x_test)
    assert probabilities.shape == (9, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # saved as a torch.export graph: loads where mlops cannot be imported, same numbers
    assert version.tags["serialization_format"] == "pt2"
    np.save(tmp_path / "x.npy", x_test)
    without_mlops = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_MLOPS, tracking_uri, str(tmp_path / "x.npy"),
         f"models:/{result.model_name}/{result.model_version}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert without_mlops.returncode == 0, without_mlops.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "x.npy.out.npy"), probabilities, atol=1e-6)


LOAD_WITHOUT_MLOPS = """
import sys
sys.modules["mlops"] = None  # any import of mlops now fails
import mlflow, numpy as np
tracking_uri, x_path, model_uri = sys.argv[1:]
mlflow.set_tracking_uri(tracking_uri)
np.save(x_path + ".out.npy", mlflow.pyfunc.load_model(model_uri).predict(np.load(x_path)))
"""


def test_each_training_adds_a_version(make_cfg, tracking_uri: str) -> None:
    first = train(make_cfg("model=mlp", "registry.model_name=versions-test"))
    client = mlflow.MlflowClient(tracking_uri)
    client.update_registered_model("versions-test", description="the owner's words")
    second = train(make_cfg("model=mlp", "registry.model_name=versions-test"))
    assert (first.model_version, second.model_version) == ("1", "2")
    assert first.run_id != second.run_id
    # each version describes its own run; the model's description, once written, is kept
    for result in (first, second):
        described = client.get_model_version("versions-test", result.model_version).description
        assert f"by run {result.run_id[:8]};" in described
        # ...and ends with the gate's verdict, with its reason
        verdict = client.get_model_version("versions-test", result.model_version).tags
        expected = (
            "promoted to @champion" if verdict["gate.decision"] == "promoted" else ("not promoted")
        )
        assert described.endswith(f"Gate: {expected} ({verdict['gate.reason']}).")
    assert client.get_registered_model("versions-test").description == "the owner's words"


def test_same_config_and_data_give_same_metrics(make_cfg) -> None:
    first = train(make_cfg("model=cnn", "register=false"))
    second = train(make_cfg("model=cnn", "register=false"))
    assert first.model_version is None
    for key in ("test/acc", "test/loss", "val/loss", "train/loss"):
        assert first.metrics[key] == second.metrics[key], key


def runs_in(tracking_uri: str) -> int:
    client = mlflow.MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments)) if experiments else 0


def test_bad_data_fails_before_a_run_is_created(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.npz"
    x = np.zeros((30, 4), dtype=np.float32)
    x[3, 1] = np.nan
    save_npz_reproducibly(bad, {"x": x, "y": np.arange(30) % 3})
    before = runs_in(tracking_uri)
    with pytest.raises(DataError, match=r"bad\.npz"):
        train(make_cfg(f"data.path={bad}"))
    assert runs_in(tracking_uri) == before


def test_shape_the_model_cannot_take_fails_before_a_run(
    make_cfg, tracking_uri: str, tmp_path: Path
) -> None:
    flat = tmp_path / "flat.npz"
    rng = np.random.default_rng(0)
    save_npz_reproducibly(
        flat, {"x": rng.normal(size=(60, 64)).astype(np.float32), "y": np.arange(60) % 3}
    )
    before = runs_in(tracking_uri)
    with pytest.raises(ModelConfigError, match="cnn takes samples shaped"):
        train(make_cfg(f"data.path={flat}", "model=cnn"))
    assert runs_in(tracking_uri) == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("registry.serialization_format=onnx", "registry.serialization_format='onnx'"),
        ("registry.gate.direction=up", "registry.gate.direction='up'"),
        ("registry.model_name='team/digits'", "name 'team/digits' is not one MLflow accepts"),
        ("data.name='digits:v2'", "name 'digits:v2-cnn' is not one MLflow accepts"),
    ],
)
def test_registry_settings_are_checked_before_a_run(
    make_cfg, tracking_uri: str, override: str, message: str
) -> None:
    """They are read after training: a typo must not cost one."""
    before = runs_in(tracking_uri)
    with pytest.raises(ModelConfigError, match=message):
        train(make_cfg(override))
    assert runs_in(tracking_uri) == before


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("data.batch_size=0", DataError, "data.batch_size=0: use a whole number"),
        ("optimizer.lr=-1", ModelConfigError, "Invalid learning rate: -1; fix the optimizer"),
        ("trainer.max_epochs=0", LaunchError, "trainer.max_epochs=0 trains nothing"),
        ("trainer.limit_train_batches=0", LaunchError, "limit_train_batches=0 trains nothing"),
    ],
)
def test_values_that_would_fail_or_train_nothing_are_refused_before_a_run(
    make_cfg, tracking_uri: str, override: str, error: type, message: str
) -> None:
    """Lightning would reach them inside `fit`, with a run already created (or, for zero
    steps, test and register the untrained network)."""
    before = runs_in(tracking_uri)
    with pytest.raises(error, match=message):
        train(make_cfg(override))
    assert runs_in(tracking_uri) == before


def test_user_csv_trains_and_registers_a_model_that_takes_raw_features(
    make_cfg, tmp_path: Path, tracking_uri: str
) -> None:
    """Features on scales 1,000x apart; `data=files` standardizes them inside the model, so
    the registered version takes the file's raw values."""
    rng = np.random.default_rng(1)
    y = np.arange(120) % 3
    x = (rng.normal(size=(120, 4)) + 2 * y[:, None]) * [1000.0, 1.0, 0.001, 1.0]
    path = tmp_path / "blobs.csv"
    lines = ["a,b,c,d,label"] + [",".join(map(str, [*r, c])) for r, c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    cfg = make_cfg("data=files", "data.name=blobs", f"data.path={path}", "model=mlp")
    result = train(cfg)
    assert result.model_name == "blobs-mlp"
    assert result.model_version is not None

    splits = instantiate(cfg.data).splits
    mean, std = splits.x_train.mean(axis=0), splits.x_train.std(axis=0)
    registered = mlflow.pytorch.load_model(f"models:/blobs-mlp/{result.model_version}")
    checkpoint = torch.load(result.checkpoint_path, weights_only=False)["state_dict"]
    net = MLP([4], 3).eval()
    net.load_state_dict({k.removeprefix("net.net."): v for k, v in checkpoint.items()
                         if k.startswith("net.net.")})  # fmt: skip
    raw = torch.from_numpy(splits.x_test)
    with torch.inference_mode():
        expected = torch.softmax(net((raw - mean) / std), dim=-1)
        torch.testing.assert_close(registered(raw), expected, rtol=1e-4, atol=1e-5)


def test_an_optimized_metric_that_was_not_logged_names_the_ones_that_were(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = compose_config(["optimized_metric=val/accuracy"])
    metrics = {"val/acc": 0.9, "val/loss": 0.3}
    with warnings.catch_warnings():  # a single run: nothing reads the value, no warning
        warnings.simplefilter("error")
        assert training.optimized_value(cfg, metrics) is None
    monkeypatch.setattr(training, "current_sweep_job", lambda: SweepJob(tmp_path, 0))
    with pytest.warns(UserWarning, match=r"optimized_metric=val/accuracy .* val/acc, val/loss"):
        assert training.optimized_value(cfg, metrics) is None
    assert training.optimized_value(compose_config(["optimized_metric=null"]), {}) is None


def test_the_result_line_shows_test_scores_or_says_the_run_was_not_tested() -> None:
    metrics = {"val/acc": 0.91, "val/acc_best": 0.93, "test/acc": 0.9, "test/loss": 0.25}
    assert training.summary_scores(metrics) == "test/acc=0.9000, test/loss=0.2500"
    untested = {k: v for k, v in metrics.items() if not k.startswith("test/")}
    assert training.summary_scores(untested) == (
        "not tested (test=false); val/acc=0.9100, val/acc_best=0.9300"
    )


def test_an_untested_training_registers_its_best_checkpoint_and_plots_its_curves(
    make_cfg, tracking_uri: str, digits_file: Path
) -> None:
    """With test=false nothing reloads the best checkpoint after fit, which ends on the
    last epoch's weights: they were registered instead, with no plots at all."""
    cfg = make_cfg("model=mlp", "test=false", "registry.model_name=untested", BEST_IS_NOT_LAST)
    result = train(cfg)
    x_test = np.load(digits_file)["x_test"]
    checkpoints = Path(result.checkpoint_path).parent
    check_registered_from_best_checkpoint(cfg, tracking_uri, "untested", checkpoints, x_test)
    artifacts = artifact_paths(mlflow.MlflowClient(tracking_uri), result.run_id)
    assert "plots/learning_curves.png" in artifacts
    assert "plots/confusion_matrix.png" not in artifacts  # of the test split, never run


def test_runs_of_the_same_seed_get_different_names_and_the_same_draws(tmp_path: Path) -> None:
    """A local store names a run from Python's global `random`, which the seed has just
    set: without a name of its own every training would be called alike in the UI."""
    cfg = compose_config([f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    names, draws = [], []
    for _ in range(2):
        random.seed(cfg.seed)
        logger = build_mlflow_logger(cfg.logger, {}, tmp_path / "mlartifacts")
        names.append(logger.experiment.get_run(logger.run_id).info.run_name)
        draws.append(random.random())
    assert names[0] != names[1]
    random.seed(cfg.seed)
    assert draws == [random.random()] * 2  # naming the run did not move the seeded state


def test_a_failed_job_keeps_its_error_in_train_log(tmp_path: Path) -> None:
    job = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "train.py"), "model=mlp",
         "trainer.precision=bogus", f"paths.log_dir={tmp_path / 'logs'}",
         f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert job.returncode == 1
    (job_log,) = (tmp_path / "logs").glob("train/runs/*/train.log")
    assert "[mlops][ERROR] - the job failed" in job_log.read_text()
    assert "Precision 'bogus' is invalid" in job_log.read_text()  # with the traceback
