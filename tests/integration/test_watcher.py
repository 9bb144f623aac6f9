"""The inbox watcher: which file events wake the daemon, with real inotify (watchdog) on a real board."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from conveyor.board import BoardLayout
from conveyor.watcher import InboxWatcher, _WakeOnInboxFiles


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


def test_only_task_files_arriving_in_inbox_wake(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    wake = _Counter()
    handler = _WakeOnInboxFiles(layout.inbox, wake)
    inbox, assigned = layout.inbox, layout.assigned / "dev"
    waking = [
        FileCreatedEvent(str(inbox / "t.yaml")),
        FileMovedEvent(str(tmp_path / "elsewhere.yaml"), str(inbox / "t.yml")),
        FileClosedEvent(str(inbox / "t.yaml")),                 # written in place, writer done
        DirCreatedEvent(str(inbox / "oops.yaml")),              # rejected by the next scan
        DirMovedEvent(str(inbox), str(tmp_path / "aside")),       # inbox/ itself moved away or replaced
    ]
    quiet = [
        FileCreatedEvent(str(inbox / ".t.yaml.tmp")),           # an editor's or writer's temp file
        FileCreatedEvent(str(inbox / "notes.txt")),
        FileCreatedEvent(str(assigned / "t.yaml")),             # the daemon's own rewrites
        FileCreatedEvent(str(layout.done / "dev" / "t.yaml")),
        FileCreatedEvent(str(inbox / "sub" / "t.yaml")),        # not directly in inbox/
    ]
    for event in waking:
        before = wake.count
        handler.on_any_event(event)
        assert wake.count == before + 1, event
    for event in quiet:
        before = wake.count
        handler.on_any_event(event)
        assert wake.count == before, event


def test_a_drop_right_after_a_claim_wakes_the_daemon(tmp_path: Path) -> None:
    """A claim (rename out of inbox/) must not hold back the next drop's event.

    Watching inbox/ alone, watchdog queued the claim's unmatched IN_MOVED_FROM for 0.5 s ahead of the
    drop's event. With the whole board watched, the claim is a matched move and the drop arrives alone.
    """
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    (layout.assigned / "dev").mkdir()
    wake = _Counter()
    watcher = InboxWatcher(layout.root, layout.inbox, wake)
    watcher.start()
    try:
        first = layout.inbox / "first.yaml"
        first.write_text("id: first\n")
        assert wake.event.wait(10), "the first drop did not wake the daemon"
        wake.event.clear()
        os.rename(first, layout.assigned / "dev" / "first.yaml")       # the claim
        staging = layout.root / ".staging"
        staging.mkdir()
        (staging / "second.yaml").write_text("id: second\n")
        os.rename(staging / "second.yaml", layout.inbox / "second.yaml")  # the next drop
        assert wake.event.wait(10), "the drop after a claim did not wake the daemon"
    finally:
        watcher.stop()


class _Recorder(FileSystemEventHandler):
    def __init__(self) -> None:
        self.events: list[FileSystemEvent] = []
        self.moved = threading.Event()

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.append(event)
        if event.event_type == "moved":
            self.moved.set()


def test_a_claim_is_seen_as_one_matched_move(tmp_path: Path) -> None:
    """The mechanism behind the test above: with the board watched, the claim's IN_MOVED_FROM finds its
    IN_MOVED_TO, so watchdog delivers it as a move at once instead of parking it half a second as an
    unmatched IN_MOVED_FROM (later reported as a deletion) ahead of every later event."""
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    (layout.assigned / "dev").mkdir()
    task = layout.inbox / "t.yaml"
    task.write_text("id: t\n")
    recorder = _Recorder()
    watcher = InboxWatcher(layout.root, layout.inbox, lambda: None, handler=recorder)
    watcher.start()
    try:
        os.rename(task, layout.assigned / "dev" / "t.yaml")
        assert recorder.moved.wait(10)
    finally:
        watcher.stop()
    moves = [e for e in recorder.events if e.event_type == "moved"]
    assert [(Path(str(e.src_path)).parent.name, Path(str(e.dest_path)).parent.name) for e in moves] == [
        ("inbox", "dev")]
    assert not [e for e in recorder.events if e.event_type == "deleted"]
