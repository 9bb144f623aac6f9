"""Moves that never replace their target: the claim (`claim_move`: hard link, then unlink) and the
no-replace rename used for finishing and rejecting.

`os.rename` silently replaces an existing file, so a task with a duplicate id could overwrite another.
Linux has `renameat2(RENAME_NOREPLACE)` and macOS `renamex_np(RENAME_EXCL)`, both atomic; where neither
is available (or the filesystem refuses), `link` + `unlink` gives the same exclusivity: `link` fails if the
target exists, and of two racing claimers only one can unlink the source.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1  # Linux
_RENAME_EXCL = 0x00000004  # macOS renamex_np


@cache
def _renamer(linux_flag: int, macos_flag: int) -> Callable[[bytes, bytes], int] | None:
    """The platform's atomic rename with a flag (renameat2 / renamex_np), or None when libc lacks it."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn = libc.renameat2
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        return lambda src, dst: int(fn(_AT_FDCWD, src, _AT_FDCWD, dst, linux_flag))
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fnx = libc.renamex_np
        fnx.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        return lambda src, dst: int(fnx(src, dst, macos_flag))
    return None


def _native() -> Callable[[bytes, bytes], int] | None:
    """The platform's atomic no-replace rename, or None when the C library lacks it."""
    return _renamer(_RENAME_NOREPLACE, _RENAME_EXCL)


def rename_noreplace(src: Path, dst: Path) -> None:
    """Atomically move `src` to `dst`; FileExistsError if `dst` exists, FileNotFoundError if `src` is gone."""
    native = _native()
    if native is not None:
        if native(os.fsencode(src), os.fsencode(dst)) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    _link_then_unlink(src, dst)


# link() errors meaning "this filesystem has no hard links here": fall back to the no-replace rename.
_NO_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS})


def claim_move(src: Path, dst: Path) -> None:
    """Move `src` to `dst` for a claim: `link` then `unlink`, never replacing `dst`.

    As exclusive as a no-replace rename (`link` fails if `dst` exists, so one claimer wins), and the
    source folder sees only a deletion. A rename would show there as an IN_MOVED_FROM, which watchdog
    holds for half a second to pair, delaying every later event of the inbox (the next drop) behind it.
    A crash between the two calls leaves both names on one inode; `is_interrupted_claim` recognises that
    and the caller completes the claim. FileExistsError / FileNotFoundError as for rename_noreplace.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        rename_noreplace(src, dst)
        return
    with contextlib.suppress(FileNotFoundError):   # gone already: the claim holds through `dst` anyway
        os.unlink(src)


def is_interrupted_claim(src: Path, dst: Path) -> bool:
    """Whether `src` and `dst` are one file under two names: a claim interrupted between link and unlink."""
    try:
        return os.path.samefile(src, dst)
    except OSError:
        return False


def _link_then_unlink(src: Path, dst: Path) -> None:
    os.link(src, dst, follow_symlinks=False)
    try:
        os.unlink(src)
    except FileNotFoundError:
        # Another claimer linked the same source and unlinked it first: it won; undo our link.
        os.unlink(dst)
        raise


_RENAME_EXCHANGE = 2  # Linux renameat2
_RENAME_SWAP = 0x00000002  # macOS renamex_np


def _native_exchange() -> Callable[[bytes, bytes], int] | None:
    """The platform's atomic swap of two names, or None when the C library lacks it."""
    return _renamer(_RENAME_EXCHANGE, _RENAME_SWAP)


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the files named `a` and `b`; False when the platform or filesystem cannot.

    A swap is a compare-and-swap that loses nothing: whatever was at `b` (even a version written a
    microsecond ago) ends up at `a`, where the caller can compare it and merge it forward.
    FileNotFoundError when either name is missing.
    """
    native = _native_exchange()
    if native is None:
        return False
    if native(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))
