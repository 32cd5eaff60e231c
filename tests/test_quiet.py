"""Only the five unactionable messages are filtered; the libraries' other output stays."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities._pytree import _tree_flatten

from mlops.quiet import (
    ARTIFACT_PROGRESS_BAR,
    artifact_progress_bars_only_when_asked,
    silence_unactionable_messages,
)


def test_the_litlogger_tip_goes_and_other_trainer_lines_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silence_unactionable_messages()
    silence_unactionable_messages()  # twice, as two trainings in one process do
    # BentoML's logging set-up, run by an earlier test in this process (bentoml.serve),
    # disables the loggers that exist by then (dictConfig's disable_existing_loggers)
    loggers = [logging.getLogger(name) for name in logging.root.manager.loggerDict
               if "lightning" in name]  # fmt: skip
    disabled = [logger for logger in loggers if logger.disabled]
    for logger in disabled:
        logger.disabled = False
    try:
        with caplog.at_level(logging.INFO):
            L.Trainer(accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False)
    finally:
        for logger in disabled:
            logger.disabled = True
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("GPU available") for message in messages)
    assert not any("litlogger" in message for message in messages)


def test_the_leafspec_deprecation_goes_and_other_future_warnings_stay() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_unactionable_messages()
        _tree_flatten(torch.zeros(1))  # Lightning's helper: builds a LeafSpec for a leaf
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]


def test_a_spawned_ddp_process_installs_the_filters_too(monkeypatch) -> None:
    """A process started by `start_method: spawn` has none of its parent's filters; the
    strategy's per-process setup installs them before Lightning's loaders warn."""
    from lightning.pytorch.strategies import DDPStrategy

    from mlops.distributed.strategy import EvalBufferSyncDDPStrategy

    monkeypatch.setattr(DDPStrategy, "setup_environment", lambda self: None)  # no process group
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()  # as in a new process
        warnings.simplefilter("always")
        EvalBufferSyncDDPStrategy(start_method="spawn").setup_environment()
        _tree_flatten(torch.zeros(1))
    assert caught == []


def test_exporting_the_built_in_networks_warns_nothing_and_other_user_warnings_stay(
    tmp_path: Path,
) -> None:
    """torch.export's notes on channels-last CNN weights and on GRU/LSTM weight lists."""
    from mlops.models.cnn import CNN
    from mlops.models.inference import inference_model
    from mlops.models.rnn import RNN

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_unactionable_messages()
        for net in (CNN((1, 8, 8), 10), RNN((1, 8, 8), 10, cell="lstm")):
            program = torch.export.export(inference_model(net), (torch.zeros(2, 1, 8, 8),))
            torch.export.save(program, tmp_path / f"{net.family}.pt2")
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


class _TwoBatches(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.zeros(4, 2))
        return torch.utils.data.DataLoader(data, batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_small_dataset_log_interval_warning_goes_and_other_user_warnings_stay(
    tmp_path: Path,
) -> None:
    """Lightning's note that an epoch of 2 batches is shorter than `log_every_n_steps`:
    about per-step logging, which the classifier does not do."""
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=CSVLogger(tmp_path),
                        log_every_n_steps=10, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_unactionable_messages()
        trainer.fit(_TwoBatches())
        warnings.warn("something else", UserWarning, stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not any("logging interval" in message for message in messages), messages
    assert "something else" in messages


def _download_a_run_with_three_artifacts(tmp_path: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("quiet", artifact_location=str(tmp_path / "art"))
    run = client.create_run(experiment)
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.txt").write_text(name)
        client.log_artifact(run.info.run_id, str(tmp_path / f"{name}.txt"), "files")
    client.download_artifacts(run.info.run_id, "files", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out" / "files").iterdir()) == [
        "a.txt", "b.txt", "c.txt"
    ]  # fmt: skip


@pytest.mark.parametrize(("user_setting", "bar_shown"), [(None, False), ("true", True)])
def test_artifact_progress_bars_stay_out_of_logs_unless_asked_for(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    user_setting: str | None,
    bar_shown: bool,
) -> None:
    monkeypatch.setenv(ARTIFACT_PROGRESS_BAR, user_setting or "")  # restored after the test
    if user_setting is None:
        monkeypatch.delenv(ARTIFACT_PROGRESS_BAR)
    artifact_progress_bars_only_when_asked()
    _download_a_run_with_three_artifacts(tmp_path)
    assert ("Downloading artifacts" in capfd.readouterr().err) is bar_shown
