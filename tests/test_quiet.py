"""Only the four unactionable messages are filtered; the libraries' other output stays."""

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
    artifact_progress_bars_only_on_a_terminal,
    silence_unactionable_messages,
)


def test_the_litlogger_tip_goes_and_other_trainer_lines_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    silence_unactionable_messages()
    silence_unactionable_messages()  # twice, as two trainings in one process do
    with caplog.at_level(logging.INFO):
        L.Trainer(accelerator="cpu", logger=CSVLogger(tmp_path), enable_progress_bar=False)
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
    artifact_progress_bars_only_on_a_terminal()  # stderr is captured here: not a terminal
    _download_a_run_with_three_artifacts(tmp_path)
    assert ("Downloading artifacts" in capfd.readouterr().err) is bar_shown
