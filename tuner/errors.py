"""One exception hierarchy: every error a user can cause is a TunerError.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "TunerError",
    "ConfigError",
    "DataError",
    "StorageError",
    "StudyNotFoundError",
    "TrialError",
    "ExportError",
    "ModelError",
    "InputImageError",
]


class TunerError(Exception):
    """Base class: a problem the user can fix, reported as one line.

    ``remedy`` says how to fix it, naming the parameters involved as ``{name}`` fields: ``str(error)``
    shows them as the Python API's arguments (`` `force` ``), the command line as its flags (``--force``),
    through ``describe``. The library thus never names a flag, and each interface names its own.
    """

    exit_code = 1

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        # User input (keys, names, paths) ends up in messages: control characters would break the one line.
        self.problem = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
        self.remedy = remedy  # written by tuner itself, never holding user input: safe to format
        super().__init__(self.describe(_argument))

    def describe(self, parameter: Callable[[str], str]) -> str:
        """The one line, with each parameter of the remedy named by ``parameter(name)``."""
        if self.remedy is None:
            return self.problem
        return f"{self.problem}; {self.remedy.format_map(_Names(parameter))}"


def _argument(name: str) -> str:
    return f"`{name}`"


class _Names(dict[str, str]):
    def __init__(self, parameter: Callable[[str], str]) -> None:
        super().__init__()
        self.parameter = parameter

    def __missing__(self, name: str) -> str:
        return self.parameter(name)


class ConfigError(TunerError):
    """A study file, CLI option or environment value is invalid."""

    exit_code = 2


class DataError(TunerError):
    """A dataset is missing, unreadable or malformed."""

    exit_code = 3


class StorageError(TunerError):
    """The study storage cannot be reached or used."""

    exit_code = 4


class StudyNotFoundError(StorageError):
    """The storage holds no study of that name (or no finished trial where one is needed)."""


class TrialError(TunerError):
    """A single trial could not finish (for example its loss became NaN). The study goes on."""


class ExportError(TunerError):
    """The final training job could not write its output."""

    exit_code = 5


class ModelError(TunerError):
    """A saved model directory is missing, incomplete or corrupt."""

    exit_code = 6


class InputImageError(TunerError):
    """An input given to ``predict`` is unreadable or of the wrong shape."""

    exit_code = 7
