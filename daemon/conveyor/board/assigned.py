"""Which files in `assigned/` are Conveyor's to act on, and noticing the ones another process puts there.

`assigned/` is shared with the file-based workflow the board comes from: its orchestrator (or a person)
assigns tasks there, its agents mark them `in_progress`, and people leave `done`, `error` and `blocked`
files there for review. Conveyor runs a file only when its status is `assigned` (or `new`) for an agent
it serves, or when it is `in_progress` under a claim of this daemon whose run did not finish. Everything
else is settled or someone else's and is left byte-identical; a person retries an errored task by setting
its status back to `assigned`.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog

from conveyor.board.layout import BoardLayout, task_files
from conveyor.core import yamlio
from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.task import Task, claim_host, parse_task, task_id_from_path

log = structlog.get_logger("conveyor.board.assigned")
RUNNABLE = ("assigned", "new")
SETTLE_S = 2.0            # a file this fresh that does not parse may still be being written


class Action(StrEnum):
    RUN = "run"           # waiting for Conveyor to start it
    RESUME = "resume"     # Conveyor's own run, interrupted (start-up recovery decides)
    LEAVE = "leave"       # settled, someone else's, or for an agent Conveyor does not serve


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""


def judge(document: Mapping[str, Any], *, serves: Callable[[str], bool],
          ours: Callable[[Mapping[str, Any]], bool]) -> Verdict:
    """What Conveyor may do with one file in `assigned/` (see the module docstring)."""
    status = str(document.get("status") or "new").strip().lower()
    if status in RUNNABLE:
        agent = document.get("agent")
        if not isinstance(agent, str | int) or not serves(str(agent)):
            return Verdict(Action.LEAVE, f"no agents.yaml entry serves agent {agent!r}")
        return Verdict(Action.RUN)
    if status == "needs_input":   # Conveyor's own question to a person (pipeline/questions.py): it parks it
        return Verdict(Action.RESUME if ours(document) else Action.LEAVE, "waits for an answer")
    if status == "in_progress":
        if ours(document):
            return Verdict(Action.RESUME)
        return Verdict(Action.LEAVE, f"in progress, claimed by {document.get('claimed_by') or 'someone else'}")
    return Verdict(Action.LEAVE, f"status {status!r} is not Conveyor's to run")


def claimed_here(document: Mapping[str, Any], host: str, telemetry_knows: Callable[[str], bool]) -> bool:
    """An `in_progress` claim of this daemon: Conveyor's on this host, or one whose runs its telemetry holds
    (the host name of a container may change over a restart; its state folder does not)."""
    claimer = claim_host(document)
    if claimer is None:
        return False
    return claimer == host or telemetry_knows(str(document.get("id") or ""))


Signature = tuple[int, int, int]


class AssignedWatch:
    """Finds tasks another process (an orchestrator, a person) assigns into `assigned/<agent>/` while the
    daemon runs. Each file is judged once per version (inode, size, mtime): a person who sets an errored
    task back to `assigned` changes its version, and it is judged again."""

    def __init__(self, layout: BoardLayout, serves: Callable[[str], bool],
                 reject: Callable[[Path, list[Problem]], None]) -> None:
        self._layout = layout
        self._serves = serves
        self._reject = reject
        self._judged: dict[Path, Signature] = {}
        self.due = True     # look on the first pass; then when a file event or the rescan says so

    def scan(self, tracked: Callable[[str], bool]) -> list[Task]:
        """Valid, runnable tasks in `assigned/` that the daemon does not hold yet (`tracked` says which it
        holds: queued, waiting or running). Runnable files that are not valid tasks are rejected."""
        self.due = False
        found: list[Task] = []
        present: set[Path] = set()
        for path in task_files(self._layout.assigned):
            present.add(path)
            if tracked(task_id_from_path(path)):
                continue
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            sig = (info.st_ino, info.st_size, info.st_mtime_ns)
            if self._judged.get(path) == sig or not stat.S_ISREG(info.st_mode):
                continue
            task, settled = self._judge_one(path, info, tracked)
            if task is not None:
                found.append(task)
            if settled:
                self._judged[path] = sig
        for gone in set(self._judged) - present:
            del self._judged[gone]
        return found

    def mark_due(self) -> None:
        """A file event in assigned/ (called from the watcher's thread: sets a flag only)."""
        self.due = True

    def note(self, path: Path) -> None:
        """The daemon wrote this file itself (a claim): its current version needs no judging."""
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        self._judged[path] = (info.st_ino, info.st_size, info.st_mtime_ns)

    def forget(self, path: Path) -> None:
        """Look at this file again on the next scan (it was handed back to wait)."""
        self._judged.pop(path, None)

    def _judge_one(self, path: Path, info: os.stat_result,
                   tracked: Callable[[str], bool]) -> tuple[Task | None, bool]:
        """The task to pick up (or None), and whether this version of the file is judged for good."""
        fresh = abs(time.time() - info.st_mtime) < SETTLE_S
        document = yamlio.read_mapping(path)
        if document is not None:
            verdict = judge(document, serves=self._serves, ours=lambda _d: False)
            if verdict.action is not Action.RUN:
                return None, True
        # runnable, or not YAML at all (no one's task): validated, and rejected once it has settled
        try:
            task = parse_task(path)
        except TaskFileError as exc:
            if not fresh:
                self._reject(path, exc.problems)
            return None, not fresh
        except OSError:
            return None, False
        if tracked(task.id):
            return None, True
        if task.agent != path.parent.name:
            log.warning("task.agent_folder_differs", task_id=task.id, agent=task.agent, folder=path.parent.name,
                        note="it runs as the agent its file names")
        return task, True
