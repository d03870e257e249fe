"""How a value or an error reads in one line of text, the same in the terminal and in a report."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["first_line", "format_value"]


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none (tracebacks and SQL stay out of one-line errors)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def format_value(value: Any, *, spec: str = ".4g", missing: str = "–") -> str:
    """A number formatted with ``spec``; ``missing`` for None and NaN (no measurement); anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float):
        return format(value, spec)
    return str(value)
