"""Two messages from the stack that no mlops user can act on, filtered by their exact text
so that everything else the libraries say still shows."""

from __future__ import annotations

import logging
import warnings

# Lightning 2.6 advertises its cloud logger whenever a Trainer has any other logger.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
# Lightning's own pytree helper still builds torch's deprecated `LeafSpec` (Lightning #21326).
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
RANK_ZERO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(LITLOGGER_TIP)


def silence_unactionable_messages() -> None:
    """Idempotent: the filters are installed once per process."""
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
