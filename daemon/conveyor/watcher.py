"""File events on `inbox/` as a hint to look sooner; the periodic rescan remains the truth.

inotify drops events when its queue overflows and FSEvents asks for rescans, so events only wake the
main loop; they never carry state the loop depends on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from conveyor.task import is_task_name


class _WakeOnTaskFiles(FileSystemEventHandler):
    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            name = Path(str(raw)).name if raw else ""
            if name and is_task_name(name):
                self._wake()
                return
        if event.event_type == "created" and event.is_directory:
            self._wake()  # a directory dropped into inbox is rejected by the next scan


class InboxWatcher:
    """Wakes the daemon when something that may be a task appears in `inbox/`."""

    def __init__(self, inbox: Path, wake: Callable[[], None]) -> None:
        self._inbox = inbox
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_WakeOnTaskFiles(wake), str(inbox), recursive=False)

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
