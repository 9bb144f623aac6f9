"""The size gate: a change over `max_changed_lines` or `max_changed_files` opens no normal pull request.

Limits come from the task, else its agent's `size`, else daemon.yaml's `size`, each limit on its own. Over
the limit the task fails `too_large` with the author's own proposal of how to split it (one short resumed
turn), or, when the task says `too_large: draft`, opens a draft labelled `too-large`.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.config import Config
from conveyor.config.models import SizeLimits
from conveyor.core.task import Task
from conveyor.scheduling.router import agent_settings
from conveyor.workspace import task_workspace
from conveyor.workspace.task_workspace import Workspace

TOO_LARGE_LABEL = "too-large"
TOO_LARGE_KIND = "too_large"


@dataclass(frozen=True)
class Size:
    lines: int
    files: int


def limits_for(task: Task, config: Config) -> SizeLimits:
    agent = agent_settings(task, config).size or SizeLimits()
    daemon = config.daemon.size

    def pick(key: str) -> int | None:
        own = task.get_number(key)
        if own:
            return int(own)
        value = getattr(agent, key)
        return int(value) if value is not None else getattr(daemon, key)

    return SizeLimits(max_changed_lines=pick("max_changed_lines"), max_changed_files=pick("max_changed_files"))


def measure(workspace: Workspace) -> Size:
    """Added plus deleted lines and files of the staged change from the base (binary files count 0 lines)."""
    counts = task_workspace.staged_line_counts(workspace)
    return Size(sum(added + deleted for added, deleted, _ in counts), len(counts))


def over_limit(limits: SizeLimits, size: Size) -> str | None:
    """A sentence naming each limit the change exceeds, or None."""
    over = []
    if limits.max_changed_lines is not None and size.lines > limits.max_changed_lines:
        over.append(f"{size.lines} changed lines (max_changed_lines: {limits.max_changed_lines})")
    if limits.max_changed_files is not None and size.files > limits.max_changed_files:
        over.append(f"{size.files} changed files (max_changed_files: {limits.max_changed_files})")
    return "the change is too large: " + " and ".join(over) if over else None


def wants_draft(task: Task) -> bool:
    return task.get_str("too_large") == "draft"


def proposal_prompt(reason: str) -> str:
    return (f"Conveyor will not open this change as a pull request: {reason}. Do not change any file now. "
            "In a few short lines, propose how to split this task into smaller tasks, each one a "
            "reviewable pull request.")
