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
