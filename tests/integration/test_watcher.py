"""The inbox watcher: which file events wake the daemon, with real inotify (watchdog) on a real board."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import yaml
from watchdog.events import DirCreatedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.daemon.watcher import InboxWatcher, _WakeOnInboxFiles
from tests.integration.conftest import Repo


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
        FileMovedEvent(str(tmp_path / "elsewhere.yaml"), str(inbox / "t.yml")),   # renamed in: the right way
        FileClosedEvent(str(inbox / "t.yaml")),                                   # written in place, now closed
        DirCreatedEvent(str(inbox / "oops.yaml")),                                # rejected by the next scan
    ]
    quiet = [
        FileCreatedEvent(str(inbox / ".t.yaml.tmp")),        # an editor's or writer's temp file
        FileCreatedEvent(str(inbox / "notes.txt")),
        FileMovedEvent(str(inbox / "t.yaml"), str(assigned / "t.yaml")),   # something leaving inbox/
        FileCreatedEvent(str(assigned / "t.yaml")),
        FileCreatedEvent(str(inbox / "sub" / "t.yaml")),     # not directly in inbox/
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
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    wake = _Counter()
    watcher = InboxWatcher(layout.inbox, wake)
    watcher.start()
    try:
        first = layout.inbox / "first.yaml"
        first.write_text("id: first\n")
        assert wake.event.wait(10), "the first drop did not wake the daemon"
        wake.event.clear()
        assert board.claim(layout, first, "dev") == layout.assigned / "dev" / "first.yaml"
        staging = layout.root / ".staging"
        staging.mkdir()
        (staging / "second.yaml").write_text("id: second\n")
        os.rename(staging / "second.yaml", layout.inbox / "second.yaml")
        assert wake.event.wait(10), "the drop after a claim did not wake the daemon"
    finally:
        watcher.stop()


def test_a_claim_leaves_inbox_by_link_and_unlink(tmp_path: Path) -> None:
    """The claimed file keeps its inode (nothing copied), has one name left, and inbox/ lost its entry."""
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    task = layout.inbox / "t.yaml"
    task.write_text("id: t\n")
    inode = task.stat().st_ino
    target = board.claim(layout, task, "dev")
    assert target is not None and not task.exists()
    assert target.stat().st_ino == inode and target.stat().st_nlink == 1


def test_a_claim_interrupted_between_link_and_unlink_is_completed_not_rejected(repo: Repo) -> None:
    """A crash after link() and before unlink() leaves the task under two names; it runs exactly once."""
    document = {"id": "t-half", "agent": "backend-dev", "status": "new", "title": "Half claimed",
                "description": "FAKE write half.txt done", "artefacts": ["half.txt"]}
    inbox_file = repo.inbox / "t-half.yaml"
    inbox_file.write_text(yaml.safe_dump(document, sort_keys=False))
    past = inbox_file.stat().st_mtime - 60
    os.utime(inbox_file, (past, past))
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True, exist_ok=True)
    os.link(inbox_file, assigned / "t-half.yaml")            # the crash happened right here

    repo.run_once()

    assert repo.done_doc("t-half")["status"] == "done"
    assert not inbox_file.exists()
    assert not (repo.rejected / "t-half.yaml").exists(), "an interrupted claim is not a duplicate"
    assert repo.git("show", "conveyor/t-half:half.txt") == "done"


def test_a_replaced_inbox_folder_is_watched_again(repo: Repo) -> None:
    """inbox/ deleted and made anew (a checkout, a cleanup script): its drops still wake the daemon, long
    before the rescan (an hour here) would have found them."""
    from tests.integration.conftest import DAEMON_YAML
    from tests.support.waiting import wait_for

    repo.write_config("daemon.yaml", DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 3600"))
    with repo.serving() as daemon:
        repo.wait_started()
        repo.submit("t-before", description="FAKE write before.txt x")
        wait_for(lambda: repo.done_path("t-before").exists(), what="a drop into the first inbox/")
        repo.inbox.rename(repo.inbox.with_name("inbox-old"))
        repo.inbox.mkdir()
        wait_for(lambda: (watcher := daemon.watches.inbox.watcher) is not None
                 and watcher.inode == repo.inbox.stat().st_ino,
                 what="the watch to move to the new inbox/")
        repo.submit("t-after", description="FAKE write after.txt x")
        wait_for(lambda: repo.done_path("t-after").exists(), timeout=20, what="a drop into the new inbox/")
