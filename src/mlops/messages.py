"""What a job tells its user, on the console as plain lines and, with the time, in the job's
log file (Hydra's `train.log` in the output folder) beside Lightning's messages.

Hydra writes the root logger to that file, but Lightning's loggers and this one print on
their own and do not propagate to the root (the console would show each line twice): they
get the file's handler instead, so the file is the job's whole story, not an empty file.
"""

from __future__ import annotations

import logging
import sys

from mlops.quiet import MLFLOW_LOGGER, PACKAGES

LOG = logging.getLogger("mlops")
LOG.propagate = False  # the console gets the printed line; the file gets the record
LOG.addHandler(logging.NullHandler())  # no job log file: no stray copy on stderr either


def tell(message: str, *, warning: bool = False) -> None:
    """A line for the user (stdout; a warning or error on stderr), kept in the job log."""
    print(message, file=sys.stderr if warning else sys.stdout, flush=True)
    LOG.log(logging.WARNING if warning else logging.INFO, message)


def print_lightning_plainly() -> None:
    """Each Lightning package gives its logger a console handler of its own only if it is
    imported before logging is configured. `lightning.pytorch` is; the standalone
    `pytorch_lightning`, which mlflow.pytorch imports while the model is logged, is not, and
    Lightning sends its messages through whichever was imported last: from a sweep's second
    job on, they reached the console through Hydra's root handler, timestamp and logger
    name first. The loggers still unset get `lightning.pytorch`'s console handler."""
    source = logging.getLogger("lightning.pytorch")
    consoles = [h for h in source.handlers if not isinstance(h, logging.FileHandler)]
    if source.propagate or not consoles:
        return
    for name in PACKAGES:
        logger = logging.getLogger(name)
        if logger.propagate and not logger.handlers:
            logger.propagate = False
            for handler in consoles:
                logger.addHandler(handler)


def keep_in_job_log() -> None:
    """Give the job log file's handler to the loggers that do not propagate to the root, in
    place of an earlier job's (a sweep runs its jobs in one process, a file each)."""
    print_lightning_plainly()
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in (*PACKAGES, MLFLOW_LOGGER, LOG.name):
        logger = logging.getLogger(name)
        if logger.propagate:  # the root's handlers get its records already
            continue
        for handler in logger.handlers[:]:
            if isinstance(handler, logging.FileHandler) and handler not in files:
                logger.removeHandler(handler)
        for handler in files:
            if handler not in logger.handlers:
                logger.addHandler(handler)
