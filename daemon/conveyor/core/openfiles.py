"""Is someone still writing this file? Asked before a task file is claimed, so a task never runs truncated.

Authors should write elsewhere and rename into `inbox/`, but a writer that renames first and keeps writing
(or an editor saving in place) leaves a file that parses fine and is still incomplete. No quiet period
can tell: a writer may pause for any length of time. The kernel can: on Linux a read lease
(`fcntl(F_SETLEASE, F_RDLCK)`) is refused with EAGAIN while any process has the file open for writing.
The lease is taken and dropped at once; its break signal is set to SIGURG (ignored by default), so even
a writer opening the file in that instant costs nothing but a microsecond's wait.

Where leases are unavailable (macOS, NFS, a file owned by another user), the answer is "unknown" and the
caller falls back to what it can see (size and modification time).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from pathlib import Path

_F_SETLEASE = getattr(fcntl, "F_SETLEASE", None)
_F_SETSIG = getattr(fcntl, "F_SETSIG", None)


def open_for_writing(path: Path) -> bool | None:
    """True while another process holds `path` open for writing, False when none does, None when unknown."""
    if _F_SETLEASE is None or _F_SETSIG is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fd_open_for_writing(fd)
    finally:
        os.close(fd)


def fd_open_for_writing(fd: int) -> bool | None:
    """`open_for_writing` for a file we already hold open read-only (the reader's own descriptor, so a
    flood of task files costs one open each, not two)."""
    if _F_SETLEASE is None or _F_SETSIG is None:
        return None
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            return True if exc.errno == errno.EAGAIN else None   # EACCES: not our file; EINVAL: no leases
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError:
        return None
