"""Replacing a file or a directory atomically: a reader finds the old one or the new one, never half of one, never neither.

The new content is written beside the target (same directory, so the same file system) and renamed over it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import uuid
from pathlib import Path

from tuner.interrupts import deferred_interrupts

__all__ = ["install_directory", "write_text_atomically"]


def write_text_atomically(path: Path, text: str, *, staging_prefix: str) -> None:
    """Write ``text`` to ``path`` through a sibling ``<staging_prefix><random>.tmp`` file; raises ``OSError``, leaving any old file."""
    temporary = path.with_name(f"{staging_prefix}{uuid.uuid4().hex[:8]}.tmp")  # short: any name that fits fits this too
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):  # e.g. its directory could not be created: there is nothing to remove
            temporary.unlink(missing_ok=True)


def install_directory(staging: Path, target: Path) -> bool:
    """Put the complete directory ``staging`` at ``target``; True if it replaced one. At no moment is there nothing at ``target``."""
    if not target.exists():
        staging.rename(target)
        return False
    if _exchange(staging, target):  # one atomic step: the old directory is now in staging, which the caller removes
        return True
    # No atomic exchange on this system: two renames, with Ctrl-C and SIGTERM held off between them.
    backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    with deferred_interrupts():
        target.rename(backup)
        try:
            staging.rename(target)
        except BaseException:
            backup.rename(target)
            raise
    shutil.rmtree(backup, ignore_errors=True)
    return True


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a file system without the flag
        return False
    raise OSError(error, os.strerror(error), str(second))
