"""The task board on disk: folders, claiming (hard link + unlink: one claimer wins), rewrites, rejection and
finishing.

The folder a file is in is its state: `inbox/` (new) → `assigned/<agent>/` (claimed, running) →
`done/<agent>/` (done or error) → `archive/YYYY-MM/`. Files that cannot be read as tasks move unchanged to
`_rejected/` (beside the four folders, where the workflow's validator, its CI glob `work/**/done/**` and its
dashboard do not look) beside `<name>.error.yaml`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core import yamlio
from conveyor.core.errors import Problem
from conveyor.core.fsops import claim_move, is_interrupted_claim, rename_noreplace
from conveyor.core.task import Task, is_task_name, task_id_from_path

REJECTED = "_rejected"


@dataclass(frozen=True)
class BoardLayout:
    """Paths of one board; everything else takes a layout rather than building paths itself."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def assigned(self) -> Path:
        return self.root / "assigned"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def rejected(self) -> Path:
        return self.root / REJECTED

    def assigned_dir(self, agent: str) -> Path:
        return self.assigned / agent

    def done_dir(self, agent: str) -> Path:
        return self.done / agent

    def ensure(self) -> None:
        for folder in (self.inbox, self.assigned, self.done, self.archive, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)


def inbox_entries(layout: BoardLayout) -> list[Path]:
    """Candidate task files in `inbox/`, sorted by name; temp files, dotfiles and other names skipped."""
    try:
        with os.scandir(layout.inbox) as entries:
            return sorted(Path(entry.path) for entry in entries if is_task_name(entry.name))
    except FileNotFoundError:
        return []


def task_files(folder: Path) -> Iterator[Path]:
    """Task files directly inside `folder` and its immediate subfolders (`assigned/<agent>/x.yaml`)."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda item: item.name):
            if entry.is_dir(follow_symlinks=False):
                if entry.name == REJECTED:
                    continue
                with os.scandir(entry.path) as inner:
                    yield from sorted(Path(i.path) for i in inner if is_task_name(i.name))
            elif is_task_name(entry.name):
                yield Path(entry.path)


def claim(layout: BoardLayout, path: Path, agent: str) -> Path | None:
    """Move an inbox file to `assigned/<agent>/` (fsops.claim_move); None if another claimer won.

    Exactly one claimer wins: the move never replaces an existing file. Raises FileExistsError when a
    task with the same file name is already assigned (a duplicate id): the caller rejects the newcomer
    rather than overwrite the original.
    """
    target_dir = layout.assigned_dir(agent)
    target = target_dir / path.name
    try:
        try:
            claim_move(path, target)
        except FileNotFoundError:
            if target_dir.is_dir():
                raise
            target_dir.mkdir(parents=True, exist_ok=True)   # first task for this agent: make its folder
            claim_move(path, target)
    except FileNotFoundError:
        return None
    except FileExistsError:
        if is_interrupted_claim(path, target):
            # Another claimer linked it and is about to unlink (or crashed in between): it won; finish it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return None
        if not os.path.lexists(path):
            return None
        raise
    return target


# The keys Conveyor writes into a task file; every other key belongs to the author.
# (With the question keys of pipeline/questions.py: the daemon moves an answer into `questions:` itself.)
DAEMON_KEYS = frozenset({"status", "assigned_at", "started_at", "completed_at", "claimed_by", "attempt",
                         "interruptions", "result", "error", "previous_errors", "previous_results",
                         "question", "asked_at", "session_id", "asked_tool", "answer", "answered_at", "questions"})


class TaskGone(FileNotFoundError):
    """The task's file was deleted (a person cancelling it): nothing may write it back."""


def rewrite(task: Task, updates: dict[str, Any], *, durable: bool = True, fresh: bool = True) -> None:
    """Apply `updates` to the task's document (author's keys keep their place) and write it atomically.

    With `fresh`, the file is read again first: keys a person changed meanwhile (a title, a note, a
    priority) are kept, and only Conveyor's own keys (DAEMON_KEYS) come from memory. A file that is gone
    raises TaskGone instead of being written back.
    """
    if fresh:
        task.data = _merged(task, _current(task.path))
    task.data.update(updates)
    yamlio.write_yaml(task.path, task.data, durable=durable)


def _current(path: Path) -> dict[str, Any] | None:
    """The file's document now; None when it cannot be read as one (then memory wins)."""
    try:
        document = yamlio.loads(yamlio.read_limited(path))
    except FileNotFoundError as exc:
        raise TaskGone(str(path)) from exc
    except (yamlio.YamlProblem, OSError):
        if not os.path.lexists(path):
            raise TaskGone(str(path)) from None
        return None
    return document if isinstance(document, dict) else None


def _merged(task: Task, current: dict[str, Any] | None) -> dict[str, Any]:
    if current is None or current.get("id") != task.data.get("id"):
        return task.data
    merged = dict(current)
    for key in DAEMON_KEYS:
        if key in task.data:
            merged[key] = task.data[key]
        else:
            merged.pop(key, None)
    return merged


def move(task: Task, folder: Path) -> Path:
    """Move a task file into `folder` without replacing anything there; returns the new path.

    By link and unlink (fsops.claim_move), as claims are: a rename out of `assigned/` is an IN_MOVED_FROM
    that the assigned/ watch holds half a second to pair, and the next task another process assigns waited
    behind it (scripts/bench.py assign_to_spawn: assigned→spawn about twice an inbox drop). A move
    interrupted between the two calls (both names on one file, the file already says done or error) is
    completed by the next move of the task, which start-up recovery makes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / task.path.name
    try:
        claim_move(task.path, target)
    except FileExistsError:
        if not is_interrupted_claim(task.path, target):
            raise
        os.unlink(task.path)
    yamlio.fsync_dir(folder)
    task.path = target
    return target


def _free_name(folder: Path, name: str) -> Path:
    candidate = folder / name
    counter = 1
    while os.path.lexists(candidate) or os.path.lexists(candidate.with_name(candidate.name + ".error.yaml")):
        candidate = folder / f"{name}.{counter}"
        counter += 1
    return candidate


def reject(layout: BoardLayout, path: Path, problems: list[Problem], now_iso: str) -> Path | None:
    """Move an unreadable file unchanged to `_rejected/` and write `<name>.error.yaml` beside it.

    Returns the new path, or None when the file vanished meanwhile (someone else handled it). The report is
    written first: when it cannot be (a full disk), the file stays in inbox/ and nothing is half done.
    """
    layout.rejected.mkdir(parents=True, exist_ok=True)
    target = _free_name(layout.rejected, path.name)
    report_path = target.with_name(target.name + ".error.yaml")
    report = {
        "file": path.name,
        "rejected_at": now_iso,
        "problems": [{k: v for k, v in problem.as_dict().items() if v not in (None, "")} | {"file": path.name}
                     for problem in problems],
        "what_to_do": "fix the problems above, then move the file back into inbox/ "
                      f"(e.g. `mv {target.name} ../../inbox/{task_id_from_path(path)}.yaml`)",
    }
    yamlio.write_yaml(report_path, report)
    try:
        rename_noreplace(path, target)
    except FileNotFoundError:
        report_path.unlink(missing_ok=True)
        return None
    return target


def all_folders(layout: BoardLayout) -> list[Path]:
    """Every folder a task file may sit in: inbox, _rejected, and assigned/done/archive with their subfolders."""
    folders = [layout.inbox, layout.rejected]
    for parent in (layout.assigned, layout.done, layout.archive):
        folders.append(parent)
        with contextlib.suppress(OSError), os.scandir(parent) as entries:
            folders.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    return folders


def find_task(layout: BoardLayout, task_id: str) -> Path | None:
    """Where a task file named `task_id` sits anywhere on the board (inbox, assigned, done, archive and
    `_rejected`), or None. A few `stat` calls per folder, no parsing: cheap enough before every creation."""
    names = [task_id + suffix for suffix in (".yaml", ".yml")]
    for folder in all_folders(layout):
        for name in names:
            if os.path.lexists(folder / name):
                return folder / name
    return None


def create_task(layout: BoardLayout, document: dict[str, Any]) -> Path | None:
    """Write a new task into `inbox/` under its id without ever replacing a file; None if one is there.

    The document is written to a dotted temporary name (ignored by the scanner) and renamed into place
    with no-replace semantics, so a reader never sees half a file and a second creator never wins.
    """
    layout.inbox.mkdir(parents=True, exist_ok=True)
    target = layout.inbox / f"{document['id']}.yaml"
    temp = layout.inbox / f".{target.name}.{os.getpid()}.tmp"
    yamlio.write_yaml(temp, document)
    try:
        rename_noreplace(temp, target)
    except FileExistsError:
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    yamlio.fsync_dir(layout.inbox)
    return target
