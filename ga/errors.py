"""Exceptions that the scripts turn into one line on stderr and an exit status."""


class GAError(Exception):
    """A user-facing error: bad configuration, bad path, bad input. Exit status 2."""

    exit_code = 2


class ConfigError(GAError):
    """The configuration or the command line is wrong."""


class DataError(GAError):
    """The data on disk is missing or not in the expected layout."""


class ModelError(GAError):
    """A model file or its labels cannot be used."""


class WriteError(GAError):
    """A deliverable could not be written; the message names the file."""


class TrainingError(GAError):
    """Training could not produce a usable model (e.g. the loss became NaN)."""


class ExportError(GAError):
    """The exported model does not reproduce the Keras model."""


def first_line(exc, limit=200):
    """The first line of an exception's message (or its type name), at most `limit` long."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def one_line(exc, limit=200):
    """`Type: first line of the message` (or just the type) of an exception."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {first_line(exc, limit)}" if text else type(exc).__name__
