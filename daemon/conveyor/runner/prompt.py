"""The prompt an agent receives: instructions, the task, and the rules of working under Conveyor."""

from __future__ import annotations

from typing import Any

from conveyor.core import yamlio
from conveyor.core.task import WORK_KEYS, Task


def build_prompt(task: Task, *, instructions: str | None, board_dir: str, roadmap_file: str) -> str:
    """Instructions file + title, description, artefacts, context, work keys, and the house rules."""
    parts: list[str] = []
    if instructions and instructions.strip():
        parts.append(instructions.strip())
    parts.append(f"# Task {task.id}: {task.title}")
    description = task.data.get("description")
    if description:
        parts.append(_render(description))
    if task.artefacts:
        parts.append("## Files to create or change\n" + "\n".join(f"- {path}" for path in task.artefacts))
    context = task.context
    notes = context.pop("notes", None)
    context.pop("branch", None)
    context.pop("repo", None)
    if notes:
        parts.append("## Notes\n" + (_bullets(notes) if isinstance(notes, list) else _render(notes)))
    if context:
        parts.append("## Context\n" + _render(context))
    for key in WORK_KEYS:
        if key in task.data and key != "notes" and task.data[key] not in (None, "", [], {}):
            parts.append(f"## {key.replace('_', ' ').capitalize()}\n{_render(task.data[key])}")
    if key_notes := task.data.get("notes"):
        parts.append("## Notes from the author\n" + _render(key_notes))
    parts.append(_rules(task, board_dir, roadmap_file))
    return "\n\n".join(parts) + "\n"


def _rules(task: Task, board_dir: str, roadmap_file: str) -> str:
    expect = ("This task may need no file changes; if so, say so." if task.data.get("expect_changes") is False
              else "Make the change in the files of this directory.")
    return "\n".join([
        "## How to work",
        f"- You are in a git worktree on branch conveyor/{task.id}. {expect}",
        "- Do not commit, push, merge or create branches: Conveyor reviews and commits your changes.",
        f"- Do not edit {roadmap_file} or anything under {board_dir}/: Conveyor keeps them.",
        "- Never write secrets (keys, tokens, passwords) into files.",
        "- Finish with a short summary of what you changed and why.",
        "- If another agent should continue, end with lines `NEXT_AGENT: <name>`, `NEXT_TASK_TITLE: <title>`"
        " and `NEXT_TASK_NOTES: <notes>`.",
        "- If you cannot go on without a person's answer, make no changes and end with one line"
        " `NEEDS_INPUT: <your question>`; you will be resumed with the answer.",
    ])


def _bullets(items: list[Any]) -> str:
    return "\n".join(f"- {_render(item).strip()}" for item in items)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    return yamlio.dumps(value).strip()
