"""A full or read-only disk is the machine's problem, not the task's: recognise it so the task waits.

Git, SQLite and the file system each say it in their own words (an errno, "No space left on device" in
git's stderr, "database or disk is full" from SQLite), so the exception's text is read as well as its
errno. A task stopped by one of these keeps its attempt and runs again once the disk is fixed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

NOTE = ("the disk is full or read-only: free space (or remount it read-write); the task waits in assigned/ "
        "and runs again without spending an attempt")

_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})
_WORDS = ("no space left on device", "read-only file system", "disk quota exceeded", "database or disk is full",
          "readonly database")


def disk_problem(exc: BaseException) -> str | None:
    """The sentence describing the disk trouble behind `exc` (or a cause of it), or None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ERRNOS:
            where = f": {current.filename}" if current.filename else ""
            return f"{current.strerror or current}{where}"
        text = str(current)
        if any(word in text.lower() for word in _WORDS):
            return text
        current = current.__cause__ or current.__context__
    return None


def disk_state(folder: Path) -> str:
    """" (Read-only file system)" or " (No space left on device)" when the file system of `folder` is so,
    else "": appended to messages of tools (SQLite) whose own words do not say why a write failed."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return ""
    if info.f_flag & os.ST_RDONLY:
        return " (Read-only file system)"
    if info.f_bavail == 0:
        return " (No space left on device)"
    return ""
