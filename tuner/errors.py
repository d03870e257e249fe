"""One exception hierarchy: every error a user can cause is a TunerError.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``; anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

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
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # User input (keys, names, paths) ends up in messages: control characters would break the one line.
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)))


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
