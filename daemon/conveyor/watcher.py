"""File events on `inbox/` as a hint to look sooner; the periodic rescan remains the truth.

inotify drops events when its queue overflows and FSEvents asks for rescans, so events only wake the
main loop; they never carry state the loop depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from conveyor.task import is_task_name


class _WakeOnInboxFiles(FileSystemEventHandler):
    """Wake for task-like names created, moved or closed after writing directly in `inbox/`."""

    def __init__(self, inbox: Path, wake: Callable[[], None]) -> None:
        self._inbox = str(inbox)
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(str(raw))
            if str(path) == self._inbox:
                self._wake()   # inbox/ itself moved, replaced or recreated: look at once
                return
            if str(path.parent) != self._inbox:
                continue
            if is_task_name(path.name) or (event.is_directory and event.event_type in ("created", "moved")):
                self._wake()   # a directory dropped into inbox is rejected by the next scan
                return


# Only what can announce a new task (or a changed inbox/): no IN_MODIFY stream while a large file is
# written, no opens.
_INBOX_EVENTS = [FileCreatedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent, DirMovedEvent,
                 DirDeletedEvent]


class InboxWatcher:
    """Wakes the daemon when something that may be a task appears in `inbox/`.

    The whole board is watched, not `inbox/` alone: watchdog holds every unmatched IN_MOVED_FROM for half
    a second to pair it with its IN_MOVED_TO, in a queue that delivers in order, so each claim (a rename
    out of inbox/ into assigned/) held the next drop's event back by up to 0.5 s. With assigned/ watched
    too, a claim is a matched move, delivered at once.
    """

    def __init__(self, board: Path, inbox: Path, wake: Callable[[], None],
                 handler: FileSystemEventHandler | None = None) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(handler or _WakeOnInboxFiles(inbox, wake), str(board), recursive=True,
                                event_filter=_INBOX_EVENTS)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


class _WakeOnName(FileSystemEventHandler):
    def __init__(self, name: str, wake: Callable[[], None]) -> None:
        self._name = name
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw and Path(str(raw)).name == self._name:
                self._wake()
                return


class FileWatcher:
    """Wakes the daemon when one file (ROADMAP.md) changes, however it is saved.

    Editors save by writing a temporary file and renaming it over the original, which replaces the
    inode a watch on the file itself would follow; so the folder is watched (not recursively) and events
    are filtered by name, the destination of a rename included.
    """

    def __init__(self, path: Path, wake: Callable[[], None]) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_WakeOnName(path.name, wake), str(path.parent), recursive=False)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
