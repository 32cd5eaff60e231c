"""Output from the stack that no mlops user can act on: six messages, filtered by their
exact text so that everything else the libraries say still shows, and progress bars in logs."""

from __future__ import annotations

import logging
import os
import warnings

# Lightning 2.6 advertises its cloud logger whenever a Trainer has any other logger.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
# Lightning's own pytree helper still builds torch's deprecated `LeafSpec` (Lightning #21326).
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
# torch.export, saving channels-last (non-contiguous) CNN weights, which it stores as they
# are; the caveat is about weights on a GPU, and the exported copy is always on the CPU.
EXPORT_NONCONTIGUOUS_WEIGHT = "No complete tensor found in the group"
# torch.export on PyTorch's own GRU/LSTM, which re-assigns its weight list while traced.
EXPORT_RNN_FLAT_WEIGHTS = r"The tensor attributes .*\._flat_weights\[\d+\]"
# Lightning, when an epoch has fewer batches than `log_every_n_steps` (a small dataset): it
# is about per-step logging, and the classifier logs once per epoch.
FEW_BATCHES_PER_LOG_INTERVAL = r"The number of training batches \(\d+\) is smaller than the logging"
# torch.onnx's exporter, registering torchvision's operators, which no mlops network uses
EXPORTER_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"
TORCHVISION_MISSING = "torchvision is not installed"
# Lightning logs through whichever of these its packages imported last (mlflow.pytorch
# imports the standalone `pytorch_lightning`).
PACKAGES = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
RANK_ZERO_LOGGERS = tuple(f"{package}.utilities.rank_zero" for package in PACKAGES)
# MLflow draws a tqdm bar for every artifact download, also into logs and pipes.
ARTIFACT_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# MLflow's "🏃 View run ... at: <url>" on stdout for every run ended on a tracking server
RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
# MLflow's own logger: a console handler of its own, not propagating to the root
MLFLOW_LOGGER = "mlflow"


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LITLOGGER_TIP)


class _DropTorchvisionMissing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TORCHVISION_MISSING)


def silence_unactionable_messages() -> None:
    """Idempotent: the filters are installed once per process."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)
    for message in (
        EXPORT_NONCONTIGUOUS_WEIGHT,
        EXPORT_RNN_FLAT_WEIGHTS,
        FEW_BATCHES_PER_LOG_INTERVAL,
    ):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
    exporter = logging.getLogger(EXPORTER_REGISTRATION_LOGGER)
    if not any(isinstance(f, _DropTorchvisionMissing) for f in exporter.filters):
        exporter.addFilter(_DropTorchvisionMissing())


def artifact_progress_bars_only_when_asked() -> None:
    """MLflow draws a bar for every model it loads (a training loads its model two or three
    times to check it), each a wall of `\\r`-joined lines in a log or CI output, for
    downloads that take a fraction of a second; a value the user set for the variable wins."""
    os.environ.setdefault(ARTIFACT_PROGRESS_BAR, "false")


def run_links_from_mlops_only() -> None:
    """Against a tracking server MLflow prints a "View run ... at" link for every run it
    ends, the gate's evaluation runs too; a job prints the links that matter itself (the
    run, the version). A value the user set for the variable wins."""
    os.environ.setdefault(RUN_LINKS, "true")


def mlflow_notes_in_the_log_only() -> None:
    """MLflow's INFO lines (database set-up, 'Created version ...' beside the job's own
    'registered ... version') leave the console; warnings stay. The job log still gets
    them: `mlops.messages.keep_in_job_log` gives MLflow's logger the file's handler."""
    for handler in logging.getLogger(MLFLOW_LOGGER).handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
