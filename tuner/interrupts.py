"""Holding off Ctrl-C and SIGTERM over a few lines that must not be cut in the middle."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["deferred_interrupts"]


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive during the block reach their handlers after it.

    (Masking the signals would not do: the kernel hands them to any other thread, TensorFlow's say,
    and Python runs the handler in the main thread at once.) Outside the main thread this holds
    nothing: only the main thread may change handlers, and only it runs them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    previous = {
        number: signal.signal(number, lambda signum, frame: caught.append((signum, frame))) for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for signum, frame in caught[:1]:
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)
