"""One configured logger for the scripts; library modules use logging.getLogger(__name__)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from ga.errors import printable

_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class _PrintableArgs(logging.Filter):
    """Escapes control characters in a record's arguments (the names a message carries: file,
    frame, folder), so a name holding a newline cannot forge a log line of its own; the
    message's own text (a table logged on purpose over several lines) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
        return True


_PRINTABLE = _PrintableArgs()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (not the one at setup)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the root ``ga`` logger for a script run.

    Args:
        verbose: show debug messages.
        quiet: show warnings and errors only.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("ga")
    logger.setLevel(level)
    if not any(getattr(h, "_ga_console", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.addFilter(_PRINTABLE)
        handler.setFormatter(logging.Formatter(_FORMAT, "%H:%M:%S"))
        handler._ga_console = True
        logger.addHandler(handler)
    for h in logger.handlers:
        if getattr(h, "_ga_console", False):
            h.setLevel(level)
    logger.propagate = False
    return logger


def add_file_log(path: str) -> logging.Handler:
    """Also write the ``ga`` log to ``path`` (the run's train.log). Returns the handler."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.addFilter(_PRINTABLE)
    handler.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("ga")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def bar_disabled(progress: bool | None) -> bool | None:
    """tqdm's `disable` for a `progress` flag: asked for, a bar on a terminal only (tqdm's
    None: a log file or a service's journal gets no carriage-return lines); else none."""
    return None if progress else True
