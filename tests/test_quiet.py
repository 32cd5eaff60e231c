"""Only the two unactionable messages are filtered; the libraries' other output stays."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities._pytree import _tree_flatten

from mlops.quiet import silence_unactionable_messages


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
