"""Exceptions that the scripts turn into one line on stderr and an exit status.

A message names what the caller gave: an argument (`arg`, shown as a prefix) or an option
named inside the text as `opt("overwrite", "overwrite=True")`. Printed from Python
(`str(exc)`) they read as the function's arguments; the command line renders them as its
flags (`exc.render({"overwrite": "--overwrite"})`), so each caller gets advice it can follow.

Example:
    >>> e = DataError(f"the folder holds another split; pass {opt('overwrite', 'overwrite=True')}", arg="dest")
    >>> str(e)
    'dest: the folder holds another split; pass overwrite=True'
    >>> e.render({"dest": "--dest", "overwrite": "--overwrite"})
    '--dest: the folder holds another split; pass --overwrite'
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

_OPTION = re.compile(r"<<(\w+)(?:\|([^>]*))?>>")


def opt(name: str, python: Optional[str] = None) -> str:
    """An option named inside an error message: `python` (default `name`) from Python, the
    flag the command line maps `name` to from there."""
    return f"<<{name}|{python}>>" if python else f"<<{name}>>"


class GAError(Exception):
    """A user-facing error: bad configuration, bad path, bad input. Exit status 2."""

    exit_code = 2

    def __init__(self, message: str = "", arg: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.arg = arg

    def render(self, names: Optional[Mapping[str, str]] = None) -> str:
        """The message, each argument or option named as `names` maps it (a command's flags),
        else as the Python argument."""
        names = names or {}
        text = _OPTION.sub(lambda m: names.get(m.group(1)) or m.group(2) or m.group(1), self.message)
        return f"{names.get(self.arg, self.arg)}: {text}" if self.arg else text

    def __str__(self) -> str:
        return self.render()


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


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), at most `limit` long."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def one_line(exc: BaseException, limit: int = 200) -> str:
    """`Type: first line of the message` (or just the type) of an exception."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {first_line(exc, limit)}" if text else type(exc).__name__


def printable(text: str) -> str:
    """`text` as a line may show it: each character that is not printable (a newline, a
    carriage return, a terminal escape) written as its escape (`\\n`, `\\x1b`), so a file or
    frame name cannot start a forged line of its own."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
