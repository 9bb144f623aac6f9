"""Hand-offs: a finished task whose result names `next_agent` becomes that agent's task in `inbox/`.

The follow-up depends on its parent, carries the parent's context and artefacts, and starts from the
parent's branch when there is one (a reviewer must see the change it reviews). Its id is derived from the
parent (`<parent-id>-followup-<agent>`) and the whole board is searched first, so finishing the same
parent twice (recovery, a restart) never makes two. The workflow's own orchestrator names its follow-ups
`<YYYY-MM-DDTHHMM>-<agent>-followup-<parent-id>`; one of those counts as the same follow-up, either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.core.task import SAFE_NAME, Task, new_task_document

log = structlog.get_logger("conveyor.board.handoff")
MAX_ID = 128
NOTES_LIMIT = 8000
MAX_DEPTH = 10          # a chain of hand-offs longer than this is two agents passing work back and forth
DEPTH_KEY = "handoff_depth"
# The parent's own hand-off lines are not repeated to the next agent: models imitate what they read.
_MARKER_LINE = re.compile(r"^[\s>*_`#-]*NEXT_(?:AGENT|TASK_TITLE|TASK_NOTES)\b", re.IGNORECASE | re.MULTILINE)


def followup_id(parent_id: str, agent: str) -> str:
    """`<parent-id>-followup-<agent>`, shortened with a hash of the full form when over 128 characters."""
    full = f"{parent_id}-followup-{agent}"
    if len(full) <= MAX_ID:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:10]
    tail = f"-followup-{agent}-{digest}"
    return (parent_id[: max(1, MAX_ID - len(tail))] + tail)[:MAX_ID]


def existing_followup(layout: BoardLayout, parent_id: str, agent: str, *, besides: Path | None = None) -> Path | None:
    """A follow-up of `parent_id` for `agent` already on the board, made by Conveyor or by the workflow's
    orchestrator (`*-<agent>-followup-<parent-id>.yaml`); `besides` is not counted (the file asking)."""
    found = board.find_task(layout, followup_id(parent_id, agent))
    if found is not None and found != besides:
        return found
    for folder in board.all_folders(layout):
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                stem = entry.name.rsplit(".", 1)[0]
                if is_followup_name(stem, parent_id, agent) and entry.name.endswith((".yaml", ".yml")) \
                        and Path(entry.path) != besides:
                    return Path(entry.path)
    return None


def next_agent_of(parent: Task) -> str | None:
    """The agent a done task hands over to (`result.next_agent`), if it names a usable one."""
    result = parent.data.get("result")
    value = result.get("next_agent") if isinstance(result, Mapping) else None
    if not isinstance(value, str) or not value.strip():
        return None
    agent = value.strip()
    if SAFE_NAME.match(agent) is None:
        log.warning("handoff.bad_agent", task_id=parent.id, next_agent=agent[:80],
                    fix="name the next agent with letters, digits, '.', '_' or '-'")
        return None
    return agent


def handoff_document(parent: Task, agent: str, now_iso: str) -> dict[str, Any]:
    """The follow-up task for `agent`, built from the parent's document and result."""
    result = parent.data.get("result")
    result = result if isinstance(result, Mapping) else {}
    title = _text(result.get("next_task_title")) or f"Follow-up to {parent.id}"
    context = dict(parent.context)
    context.update({"previous_task": parent.id, "previous_agent": parent.agent})
    branch = _text(result.get("branch"))
    if branch:
        context["branch"] = branch
    artefacts = result.get("next_artefacts")
    artefacts_list = [str(a) for a in artefacts] if isinstance(artefacts, list) else parent.artefacts
    return new_task_document(
        task_id=followup_id(parent.id, agent), agent=agent, title=" ".join(title.split())[:200],
        description=_description(parent, result, branch), artefacts=artefacts_list,
        priority=parent.priority, dependencies=[parent.id], created_at=now_iso, created_by=parent.id,
        extra={"context": context, DEPTH_KEY: depth_of(parent) + 1})


def depth_of(task: Task) -> int:
    value = task.data.get(DEPTH_KEY)
    return value if isinstance(value, int) and value >= 0 else 0


def _description(parent: Task, result: Mapping[str, Any], branch: str | None) -> str:
    notes = _text(result.get("next_task_notes"))
    summary = _text(_MARKER_LINE.split(str(result.get("summary") or ""), maxsplit=1)[0])
    lines = [notes[:NOTES_LIMIT], ""] if notes else []
    lines.append(f"This continues task {parent.id} ({parent.title}) by {parent.agent}.")
    if branch:
        lines.append(f"Its work is on branch {branch}" + (f" ({result['pr_url']})." if result.get("pr_url") else "."))
    changed = result.get("artefacts")
    if isinstance(changed, list) and changed:
        lines.append("Files it changed: " + ", ".join(str(path) for path in changed[:50]))
    if summary:
        lines += ["", "Its summary:", summary[:NOTES_LIMIT]]
    return "\n".join(lines) + "\n"


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def handoff_agent(parent: Task) -> str | None:
    """The agent to hand `parent` over to, or None (none named, or the chain is too long: a person decides)."""
    agent = next_agent_of(parent)
    if agent is None:
        return None
    if depth_of(parent) >= MAX_DEPTH:
        log.warning("handoff.too_deep", task_id=parent.id, next_agent=agent, depth=depth_of(parent),
                    fix=f"after {MAX_DEPTH} hand-offs in a row a person decides; submit the next task by hand")
        return None
    return agent


def is_followup_name(stem: str, parent_id: str, agent: str) -> bool:
    """Whether a task file's stem is `parent_id`'s follow-up for `agent`, by Conveyor's or the workflow's name."""
    return stem == followup_id(parent_id, agent) or stem.endswith(f"-{agent}-followup-{parent_id}")


def create_handoff(layout: BoardLayout, parent: Task, now_iso: str) -> Path | None:
    """Write the follow-up into inbox/ unless the board already holds it; returns its path if written."""
    agent = handoff_agent(parent)
    if agent is None:
        return None
    task_id = followup_id(parent.id, agent)
    existing = existing_followup(layout, parent.id, agent)
    if existing is not None:
        log.info("handoff.exists", task_id=parent.id, followup=task_id, file=str(existing))
        return None
    path = board.create_task(layout, handoff_document(parent, agent, now_iso))
    if path is not None:
        log.info("handoff.created", task_id=parent.id, followup=task_id, agent=agent)
    return path
