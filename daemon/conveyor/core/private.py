"""Folders and files only their owner can read, whatever the umask: what the daemon keeps is private.

With the usual umask 022 the telemetry database came out 0644 and the logs folder holding transcripts
0755, so on a shared host other users read prompts, costs and whatever an agent printed. State folders
are made 0700 and state files 0600 here, explicitly (the umask is process-wide, and the agents the daemon
starts should keep theirs).
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(*paths: Path) -> Path:
    """Each of `paths` as a folder only its owner can enter (missing parents are made as mkdir makes them);
    returns the last."""
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        if (os.stat(path).st_mode & 0o777) != DIR_MODE:
            os.chmod(path, DIR_MODE)
    return paths[-1]


def private_file(path: Path) -> Path:
    """`path` exists as a file only its owner can read or write (created empty when missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), FILE_MODE)
    try:
        if (os.fstat(fd).st_mode & 0o777) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, flags: int) -> int:
    """`os.open` of a state file with mode 0600 when it is created (and made 0600 when it already was)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    if (os.fstat(fd).st_mode & 0o777) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd
