"""Formatting shared by the commands that print tables."""

from __future__ import annotations

from tuner.text import format_value

__all__ = ["number_cell"]


def number_cell(value: float | None) -> str:
    return format_value(value, spec=".4f", missing="-")
