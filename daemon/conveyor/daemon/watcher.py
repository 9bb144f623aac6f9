"""File events on `inbox/` and `assigned/` as a hint to look sooner; the periodic rescan remains the truth.

inotify drops events when its queue overflows and FSEvents asks for rescans, so events only wake the
main loop; they never carry state the loop depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from conveyor.core.task import is_task_name

log = structlog.get_logger("conveyor.daemon")


class _WakeOnInboxFiles(FileSystemEventHandler):
    """Wake for task-like names created in, moved into, or closed after writing in `inbox/`."""

    def __init__(self, inbox: Path, wake: Callable[[], None]) -> None:
        self._inbox = str(inbox)
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        raw = getattr(event, "dest_path", "") if event.event_type == "moved" else event.src_path
        if not raw:
            return
        path = Path(str(raw))
        if str(path.parent) != self._inbox:
            return
        if is_task_name(path.name) or event.is_directory:   # a directory dropped in is rejected by the scan
            self._wake()


class _WakeOnAssignedFiles(FileSystemEventHandler):
    """Wake for task-like names arriving in, or deleted from, `assigned/<agent>/` (another orchestrator or a
    person assigning a task; a person cancelling a running one), and for new agent folders."""

    def __init__(self, assigned: Path, wake: Callable[[], None]) -> None:
        self._assigned = str(assigned)
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = Path(str(raw))
            if event.is_directory and str(path.parent) == self._assigned:
                self._wake()
                return
            if str(path.parent.parent) == self._assigned and is_task_name(path.name):
                self._wake()
                return


_ASSIGNED_EVENTS = [FileCreatedEvent, FileMovedEvent, FileClosedEvent, FileDeletedEvent, DirCreatedEvent,
                    DirMovedEvent]

# Only what can announce a new task: no IN_MODIFY stream while a large file is written, no opens, no
# deletions (each claim unlinks one name from inbox/).
_INBOX_EVENTS = [FileCreatedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent, DirMovedEvent]


class _Watch:
    """One watchdog observer on one folder, on a daemon thread (a stuck observer never holds up exit)."""

    def __init__(self, handler: FileSystemEventHandler, folder: Path, *, recursive: bool,
                 events: list[type[FileSystemEvent]] | None = None) -> None:
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(handler, str(folder), recursive=recursive, event_filter=events)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)


class InboxWatcher(_Watch):
    """Wakes the daemon when something that may be a task appears in `inbox/`.

    Only `inbox/` is watched. Claims leave it by link+unlink (fsops.claim_move), which it sees as a plain
    deletion: a rename out would be an IN_MOVED_FROM, which watchdog holds half a second to pair with an
    IN_MOVED_TO, in an in-order queue, delaying the next drop's event behind it. (Watching the whole board
    instead pairs those moves, but watchdog then searches its queue on every event: quadratic in a flood.)
    `inode` lets the daemon notice that inbox/ was replaced and watch the new folder.
    """

    def __init__(self, inbox: Path, wake: Callable[[], None], *, assigned: bool = False) -> None:
        self.inode = inbox.stat().st_ino
        if assigned:   # its own observer (own event queue): moves out of assigned/ never delay inbox events
            super().__init__(_WakeOnAssignedFiles(inbox, wake), inbox, recursive=True, events=_ASSIGNED_EVENTS)
        else:
            super().__init__(_WakeOnInboxFiles(inbox, wake), inbox, recursive=False, events=_INBOX_EVENTS)


class WakeOnNames(FileSystemEventHandler):
    """Wake for any change to a file with one of `names` (the destination of a rename included), or to any
    file when `names` is None; opening and reading do not count."""

    def __init__(self, names: set[str] | None, wake: Callable[[], None]) -> None:
        self._names = names
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        raws = (event.src_path, getattr(event, "dest_path", ""))
        if self._names is None or any(raw and Path(str(raw)).name in self._names for raw in raws):
            self._wake()


class FileWatcher(_Watch):
    """Wakes the daemon when one file (ROADMAP.md) changes, however it is saved.

    Editors save by writing a temporary file and renaming it over the original, which replaces the
    inode a watch on the file itself would follow; so the folder is watched (not recursively) and events
    are filtered by name, the destination of a rename included.
    """

    def __init__(self, path: Path, wake: Callable[[], None]) -> None:
        super().__init__(WakeOnNames({path.name}, wake), path.parent, recursive=False)


class InboxWatch:
    """Keeps one watch on inbox/, and watches again when the folder was replaced (deleted and made anew,
    moved away and back): a watch follows the old folder, and its new tasks would wait for the rescan."""

    def __init__(self, inbox: Path, wake: Callable[[], None], *, enabled: bool, assigned: bool = False) -> None:
        self._inbox = inbox
        self._wake = wake
        self._enabled = enabled
        self._assigned = assigned
        self.watcher: InboxWatcher | None = None

    def keep(self) -> None:
        if not self._enabled:
            return
        try:
            inode = self._inbox.stat().st_ino
        except OSError:
            return   # no inbox/ right now: the scan reports it; look again next pass
        if self.watcher is not None and self.watcher.inode == inode:
            return
        if self.watcher is not None:
            self.watcher.stop()
            log.info("watcher.rearmed", inbox=str(self._inbox))
        self.watcher = InboxWatcher(self._inbox, self._wake, assigned=self._assigned)
        self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None


class BoardWatches:
    """The watches on `inbox/` and on `assigned/` (what another orchestrator or a person assigns, or deletes
    while it runs): `on_assigned` marks that assigned/ needs a look, and the loop is woken."""

    def __init__(self, inbox: Path, assigned: Path, wake: Callable[[], None], *,
                 on_assigned: Callable[[], None], enabled: bool) -> None:
        def assigned_changed() -> None:
            on_assigned()
            wake()

        self.inbox = InboxWatch(inbox, wake, enabled=enabled)
        self.assigned = InboxWatch(assigned, assigned_changed, enabled=enabled, assigned=True)

    def keep(self) -> None:
        self.inbox.keep()
        self.assigned.keep()

    def stop(self) -> None:
        self.inbox.stop()
        self.assigned.stop()
