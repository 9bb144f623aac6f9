"""ROADMAP.md on disk: read it, and change one item's status line without ever losing the author's edits.

The file lives in the user's working tree and people edit it while the daemon runs. A plain
read-modify-write would overwrite an edit saved between the read and the write. So the file is compared
with the text the edit was based on right before the write; if the author saved meanwhile, their text is
merged forward (`reapply_status`) and tried again. The write itself is an atomic swap
(`renameat2(RENAME_EXCHANGE)`), which hands back whatever was on disk at that instant: a save that lands
between the comparison and the swap is not lost but put straight back and merged like any other. Where
the platform cannot swap, an atomic replace follows the comparison (a window of microseconds).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from conveyor.core.fsops import exchange
from conveyor.core.logs import get_logger
from conveyor.core.yamlio import fsync_dir
from conveyor.roadmap.edit import reapply_status, set_status
from conveyor.roadmap.model import Roadmap, RoadmapEditConflict, RoadmapError, RoadmapItem
from conveyor.roadmap.parse import parse_roadmap

log = get_logger("conveyor.roadmap")
MAX_ROUNDS = 8
Locate = Callable[[Roadmap], RoadmapItem | None]


class WriteOutcome(StrEnum):
    WRITTEN = "written"
    UNCHANGED = "unchanged"        # the line already says that
    NOT_FOUND = "not_found"        # no item matches (renumbered, removed, or its status no longer ours)
    CONFLICT = "conflict"          # the author changed this status meanwhile: theirs stays
    REFUSED = "refused"            # the edit could not keep the file intact (RoadmapEditError)
    MISSING = "missing"            # the file is gone


@dataclass(frozen=True)
class StatusWrite:
    outcome: WriteOutcome
    number: str | None = None
    detail: str = ""


def read_roadmap(path: Path) -> tuple[str, Roadmap] | None:
    """The file's text and its items, or None when there is no such file."""
    try:
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return text, parse_roadmap(text, source=str(path))


def update_status(path: Path, locate: Locate, status: str, *,
                  before_swap: Callable[[], None] | None = None) -> StatusWrite:
    """Set the status line of the item `locate` picks (in the file as read now) to `status`.

    `before_swap` runs between the last comparison and the atomic write: tests use it to save an edit
    exactly in the narrowest window a real editor could hit. A symlinked ROADMAP.md (Coffee Maker keeps
    `docs/ROADMAP.md` → `roadmap/ROADMAP.md`) is written through to its target, which stays the file other
    tools read; the link stays a link.
    """
    path = Path(os.path.realpath(path)) if os.path.islink(path) else path
    read = read_roadmap(path)
    if read is None:
        return StatusWrite(WriteOutcome.MISSING)
    read_text, roadmap = read
    item = locate(roadmap)
    if item is None:
        return StatusWrite(WriteOutcome.NOT_FOUND)
    try:
        desired = set_status(read_text, item.number, status)
    except RoadmapError as exc:
        return StatusWrite(WriteOutcome.REFUSED, item.number, str(exc))
    if desired == read_text:
        return StatusWrite(WriteOutcome.UNCHANGED, item.number)
    return _swap_loop(path, read_text, desired, item.number, status, before_swap)


def _swap_loop(path: Path, read_text: str, desired: str, number: str, status: str,
               before_swap: Callable[[], None] | None) -> StatusWrite:
    """Write `desired` if the file still holds `expected`; else merge the author's newer text and retry."""
    expected = read_text
    for _ in range(MAX_ROUNDS):
        try:
            theirs_bytes = _replace_if_unchanged(path, _encode(desired), _encode(expected), before_swap)
        except FileNotFoundError:
            return StatusWrite(WriteOutcome.MISSING, number)
        if theirs_bytes is None:
            fsync_dir(path.parent)
            return StatusWrite(WriteOutcome.WRITTEN, number)
        expected = theirs_bytes.decode("utf-8", errors="surrogateescape")
        try:
            desired = reapply_status(read_text, expected, number, status)
        except RoadmapEditConflict as exc:
            log.warning("roadmap.edit_conflict", item=number, detail=str(exc))
            return StatusWrite(WriteOutcome.CONFLICT, number, str(exc))
        except RoadmapError as exc:
            return StatusWrite(WriteOutcome.REFUSED, number, str(exc))
        if desired == expected:
            return StatusWrite(WriteOutcome.UNCHANGED, number)
    return StatusWrite(WriteOutcome.CONFLICT, number, "the file kept changing; will try again later")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _replace_if_unchanged(path: Path, data: bytes, expected: bytes,
                          before_swap: Callable[[], None] | None) -> bytes | None:
    """Put `data` at `path` if it holds `expected`: None when done, else the bytes the author has there now."""
    current = path.read_bytes()
    if current != expected:
        return current
    mode = path.stat().st_mode & 0o7777
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        if before_swap is not None:
            before_swap()
        if not exchange(temp, path):
            if path.read_bytes() != expected:
                return path.read_bytes()
            os.replace(temp, path)
            return None
        displaced = temp.read_bytes()
        return None if displaced == expected else _put_back(path, temp, data, displaced)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _put_back(path: Path, temp: Path, ours: bytes, theirs: bytes) -> bytes:
    """A save landed between comparing and swapping: swap it straight back (at `temp` now) into place.

    If what comes out is not what we had put there, an even newer save replaced it meanwhile; that one
    goes back in turn. Returns the author's text now at `path`.
    """
    put_in, newest = ours, theirs
    for _ in range(MAX_ROUNDS):
        exchange(temp, path)
        came_out = temp.read_bytes()
        if came_out == put_in:
            return newest
        put_in, newest = newest, came_out
    return newest
