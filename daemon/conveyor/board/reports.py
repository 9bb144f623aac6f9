"""The board's two human-readable files: `WORKFLOW_LOG.md` (append-only, one line per transition) and
`AGENT_STATUS.md` (regenerated: queues per agent, what runs, the latest results).

Both are written by the daemon's loop only. They must stay cheap under a flood of a thousand tasks: log
lines are buffered and appended with one write per loop pass, counts are kept incrementally (never a
board parse per task), and AGENT_STATUS.md is rendered at most every few seconds and written only when
its text changed (so a board commit is not made for an unchanged file).
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.board.index import Known
from conveyor.board.layout import BoardLayout
from conveyor.core import yamlio
from conveyor.core.task import Task
from conveyor.core.timeutil import utc_iso

AGENT_STATUS = "AGENT_STATUS.md"
WORKFLOW_LOG = "WORKFLOW_LOG.md"
STATUS_MIN_INTERVAL_S = 3.0
RECENT = 10
MAX_PENDING = 10_000     # log lines kept while WORKFLOW_LOG.md cannot be written; the oldest go first
LIST_LIMIT = 20
LOG_HEADER = ("# Workflow log\n\nOne line per task transition, appended by Conveyor (newest last).\n\n"
              "| Time (UTC) | Event | Task | Agent | Detail |\n|---|---|---|---|---|\n")


@dataclass(frozen=True)
class Transition:
    at: float
    event: str          # claimed started done error rejected requeued archived handoff created roadmap
    task_id: str
    agent: str
    detail: str = ""


def _cell(text: str, limit: int = 200) -> str:
    folded = " ".join(text.split()).replace("|", "\\|")
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def log_line(transition: Transition) -> str:
    return (f"| {utc_iso(transition.at)} | {transition.event} | {_cell(transition.task_id, 140)} | "
            f"{_cell(transition.agent, 60) or '-'} | {_cell(transition.detail)} |\n")


@dataclass
class WorkflowLog:
    """Buffered, append-only; `flush` writes everything buffered with one `write` in append mode."""

    path: Path
    _pending: list[str] = field(default_factory=list)

    def add(self, transition: Transition) -> None:
        self._pending.append(log_line(transition))
        if len(self._pending) > MAX_PENDING:
            del self._pending[: len(self._pending) - MAX_PENDING]

    def flush(self) -> int:
        """Append the buffered lines; on failure they stay buffered for the next pass."""
        if not self._pending:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            size = os.fstat(fd).st_size
            prefix = LOG_HEADER if size == 0 else ("" if os.pread(fd, 1, size - 1) == b"\n" else "\n")
            os.write(fd, (prefix + "".join(self._pending)).encode("utf-8"))
        finally:
            os.close(fd)
        count, self._pending = len(self._pending), []
        return count


@dataclass(frozen=True)
class Result:
    at: str
    task_id: str
    agent: str
    status: str
    detail: str


def result_of(task_id: str, agent: str, document: Mapping[str, Any]) -> Result:
    """One line about a finished task: its pull request, branch or error, else its summary."""
    status = str(document.get("status") or "done")
    error = document.get("error") if isinstance(document.get("error"), Mapping) else {}
    result = document.get("result") if isinstance(document.get("result"), Mapping) else {}
    assert isinstance(error, Mapping) and isinstance(result, Mapping)
    detail = (error.get("message") if status == "error" else None) or result.get("pr_url") \
        or result.get("branch") or result.get("summary") or ""
    return Result(str(document.get("completed_at") or ""), task_id, agent, status, _cell(str(detail), 160))


@dataclass
class Tally:
    """Finished tasks in `done/` per agent and the latest results, kept up to date by events."""

    done: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    recent: deque[Result] = field(default_factory=lambda: deque(maxlen=RECENT))

    def reset_from(self, layout: BoardLayout, known: Iterable[Known]) -> None:
        """Recount from the board index (in memory; used at start and after archival)."""
        self.done.clear()
        self.errors.clear()
        finished = [k for k in known if k.path.parent.parent == layout.done or k.path.parent == layout.done]
        for item in finished:
            agent = item.path.parent.name if item.path.parent != layout.done else "-"
            (self.errors if item.status in ("error", "failed") else self.done)[agent] += 1
        if not self.recent:
            self._seed_recent(finished)

    def _seed_recent(self, finished: list[Known]) -> None:
        dated = []
        for item in finished:
            try:
                dated.append((item.path.stat().st_mtime, item))
            except OSError:
                continue
        for _, item in sorted(dated, key=lambda pair: pair[0])[-RECENT:]:
            try:
                document = yamlio.loads(yamlio.read_limited(item.path))
            except yamlio.YamlProblem:
                continue
            if isinstance(document, dict):
                self.recent.append(result_of(item.task_id, item.path.parent.name, document))

    def finished(self, task: Task, status: str) -> None:
        (self.errors if status == "error" else self.done)[task.agent] += 1
        self.recent.append(result_of(task.id, task.agent, task.data))

    def archived(self, agent: str, status: str) -> None:
        counter = self.errors if status == "error" else self.done
        counter[agent] = max(counter[agent] - 1, 0)


@dataclass(frozen=True)
class Snapshot:
    queued: list[Task]       # claimed, waiting for a slot
    running: list[Task]
    waiting: list[Task]      # in inbox, waiting for dependencies or the base branch


def render_agent_status(tally: Tally, snapshot: Snapshot, updated_at: float) -> str:
    agents = sorted({*tally.done, *tally.errors, *(t.agent for t in snapshot.queued + snapshot.running
                                                   + snapshot.waiting)})
    per = {name: Counter[str]() for name in agents}
    for column, tasks in (("waiting", snapshot.waiting), ("queued", snapshot.queued), ("running", snapshot.running)):
        for task in tasks:
            per[task.agent][column] += 1
    lines = ["# Agent status", "",
             f"Regenerated by Conveyor; do not edit. Last transition: {utc_iso(updated_at)}.", "",
             "| Agent | Waiting | Queued | Running | Done | Failed |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {per[name]['waiting']} | {per[name]['queued']} | {per[name]['running']} | "
              f"{tally.done[name]} | {tally.errors[name]} |" for name in agents]
    lines += _section("Running", [f"`{t.id}` ({t.agent}) since {t.data.get('started_at') or '?'}"
                                  for t in snapshot.running])
    lines += _section("Queued", [f"`{t.id}` ({t.agent})" for t in snapshot.queued])
    lines += _section("Waiting in inbox", [f"`{t.id}` ({t.agent})" for t in snapshot.waiting])
    lines += _section("Last results", [f"{r.at or '?'} `{r.task_id}` ({r.agent}): {r.status}"
                                       + (f" — {r.detail}" if r.detail else "") for r in reversed(tally.recent)])
    return "\n".join(lines) + "\n"


def _section(title: str, rows: list[str]) -> list[str]:
    if not rows:
        return []
    shown = [f"- {row}" for row in rows[:LIST_LIMIT]]
    if len(rows) > LIST_LIMIT:
        shown.append(f"- … and {len(rows) - LIST_LIMIT} more")
    return ["", f"## {title}", "", *shown]


@dataclass
class AgentStatusFile:
    """Rewrites AGENT_STATUS.md atomically, at most every `min_interval_s`, and only when it changed."""

    path: Path
    min_interval_s: float = STATUS_MIN_INTERVAL_S
    _last_text: str | None = None
    _last_write: float = float("-inf")

    def due(self) -> bool:
        return time.monotonic() - self._last_write >= self.min_interval_s

    def write(self, text: str) -> bool:
        self._last_write = time.monotonic()
        if text == self._last_text:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        yamlio.atomic_write(self.path, text, durable=False)
        self._last_text = text
        return True
