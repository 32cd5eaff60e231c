"""Config composition: every group option composes and instantiates; typos fail early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError

from mlops.distributed.strategy import EvalBufferSyncDDPStrategy
from mlops.errors import LaunchError
from mlops.training import check_launch, reruns_script_per_process
from tests.conftest import CONFIG_DIR, ROOT, compose_config

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    for group in ("data", "model", "trainer", "experiment")
}


def test_defaults_are_digits_cnn_on_cpu() -> None:
    cfg = compose_config([])
    assert cfg.data.name == "digits"
    assert cfg.model._target_ == "mlops.models.cnn.CNN"
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.logger.log_model is True
    assert set(cfg.callbacks) == {
        "model_checkpoint",
        "last_checkpoint",
        "early_stopping",
        "rich_progress_bar",
        "lr_monitor",
        "throughput",
        "gloo_polling_priority",
        "stop_together_on_sigterm",
    }


def test_the_progress_bar_redraws_at_most_ten_times_a_second() -> None:
    """Its drawing thread shares the GIL with training: at Lightning's default (100 a
    second) it took 18% of the MLP's samples/s in a terminal (docs/benchmarks.md)."""
    bar = instantiate(compose_config([]).callbacks.rich_progress_bar)
    assert 0 < bar.refresh_rate <= 10


@pytest.mark.parametrize("model", GROUP_OPTIONS["model"])
def test_every_model_instantiates_for_digits(model: str) -> None:
    cfg = compose_config([f"model={model}"])
    net = instantiate(cfg.model, input_shape=[1, 8, 8], num_classes=10)
    assert net.family == model


@pytest.mark.parametrize("trainer", GROUP_OPTIONS["trainer"])
def test_every_trainer_composes(trainer: str) -> None:
    cfg = compose_config([f"trainer={trainer}"])
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"


@pytest.mark.parametrize(
    ("overrides", "reruns"),
    [
        (["trainer=ddp_cpu"], True),
        (["trainer=ddp"], True),
        (["trainer=ddp_cpu", "trainer.strategy=ddp"], True),
        (["trainer=ddp_spawn_cpu"], False),
        (["trainer=ddp_spawn"], False),
        (["trainer=cpu"], False),
    ],
)
def test_ddp_presets_say_how_they_start_processes(overrides: list[str], reruns: bool) -> None:
    """What `check_launch` refuses under multirun: a start that re-runs the script."""
    strategy = compose_config(overrides).trainer.get("strategy")
    assert reruns_script_per_process(strategy) is reruns
    if isinstance(strategy, DictConfig):  # the DDP presets build a real strategy
        assert isinstance(instantiate(strategy), EvalBufferSyncDDPStrategy)


@pytest.mark.parametrize("trainer", ["gpu", "ddp", "ddp_spawn"])
def test_a_gpu_trainer_without_a_gpu_is_refused_naming_the_cpu_presets(
    trainer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only box
    with pytest.raises(LaunchError, match=r"needs a CUDA GPU.*trainer=cpu, or trainer=ddp_cpu"):
        check_launch(compose_config([f"trainer={trainer}"]))
    check_launch(compose_config(["trainer=cpu"]))  # CPU trainers go on


def test_a_required_value_left_unset_is_refused_naming_it() -> None:
    with pytest.raises(LaunchError, match=r"^data\.path: no value set.*data\.path=\.\.\.\"$"):
        check_launch(compose_config(["data=files"]))
    check_launch(compose_config(["data=files", "data.path=my.csv"]))


def test_a_file_dataset_is_named_after_its_file_unless_named() -> None:
    cfg = compose_config(["data=files", "data.path=data/churn.v2.csv"])
    assert cfg.data.name == "churn.v2"
    assert cfg.logger.experiment_name == "churn.v2"
    assert compose_config(["data=files", "data.path=x.npz", "data.name=mine"]).data.name == "mine"


@pytest.mark.parametrize("experiment", GROUP_OPTIONS["experiment"])
def test_every_experiment_composes(experiment: str) -> None:
    cfg = compose_config([f"experiment={experiment}"])
    instantiate(cfg.model, input_shape=[1, 8, 8], num_classes=10)


def test_overrides_reach_nested_keys() -> None:
    cfg = compose_config(["model=rnn", "model.cell=lstm", "trainer.max_epochs=5"])
    assert cfg.model.cell == "lstm"
    assert cfg.scheduler.T_max == 5  # interpolated from the trainer


def test_gradient_clipping_and_accumulation_reach_the_trainer(tmp_path: Path) -> None:
    cfg = compose_config(["trainer.gradient_clip_val=1.0", "trainer.accumulate_grad_batches=4"])
    trainer = instantiate(cfg.trainer, default_root_dir=tmp_path, logger=False)
    assert (trainer.gradient_clip_val, trainer.accumulate_grad_batches) == (1.0, 4)
    defaults = instantiate(compose_config([]).trainer, default_root_dir=tmp_path, logger=False)
    assert (defaults.gradient_clip_val, defaults.accumulate_grad_batches) == (None, 1)


def test_the_trainer_profiles_nothing_unless_asked(tmp_path: Path) -> None:
    from lightning.pytorch.profilers import SimpleProfiler

    from mlops.profiler import NoProfiler

    quiet = instantiate(compose_config([]).trainer, default_root_dir=tmp_path, logger=False)
    assert type(quiet.profiler) is NoProfiler
    cfg = compose_config(["trainer.profiler=simple"])  # Lightning's own names still work
    profiled = instantiate(cfg.trainer, default_root_dir=tmp_path, logger=False)
    assert isinstance(profiled.profiler, SimpleProfiler)


def test_tracking_uri_env_overrides_local_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert compose_config([]).logger.tracking_uri == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert compose_config([]).logger.tracking_uri == "sqlite:///./mlflow.db"


def test_unknown_group_option_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="transformer"):
        compose_config(["model=transformer"])


def test_mistyped_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="hiden_size"):
        compose_config(["model=rnn", "model.hiden_size=3"])


def test_missing_key_access_fails_clearly() -> None:
    with pytest.raises(ConfigAttributeError):
        _ = compose_config([]).model.hiden_size


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "m", "model.hiden_size=3"], "Could not override 'model.hiden_size'. To "),
        (["evaluate", "m", "model=transformer"], "Available options in 'model': cnn mlp rnn"),
        (["registry", "history", "m", "--config-dir", "nowhere"], "run mlops from the project"),
    ],
)
def test_cli_names_a_bad_override_or_config_folder_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    from mlops.cli import main

    monkeypatch.chdir(ROOT)
    assert main(argv) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mlops: error: ") and message in line


def test_pipeline_rejects_a_typo_before_any_work(tmp_path: Path) -> None:
    """`mlops train` from a folder with no conf/ of its own: the project's config."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops.cli",
            "train",
            "trainer.max_epoch=3",
            f"logger.tracking_uri=sqlite:///{tmp_path / 'never.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert "max_epoch" in result.stderr
    assert not (tmp_path / "never.db").exists()
    assert not (tmp_path / "logs").exists()


def test_pipeline_reports_bad_data_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "train", f"data.path={tmp_path / 'no.npz'}",
         f"logger.tracking_uri=sqlite:///{tmp_path / 'never.db'}", f"paths.log_dir={tmp_path}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: data file ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()
