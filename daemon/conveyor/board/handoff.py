"""Read an agent's hand-off (`NEXT_AGENT:`, `NEXT_TASK_TITLE:`, `NEXT_TASK_NOTES:` lines) from its final text.

Agents are told (prompt.py) to end with these lines when another agent should continue. Models decorate
what they write, so a marker is found at the start of a line after list bullets, quote marks, bold or
code markers (`- **NEXT_AGENT:** qa`), in any letter case. The last occurrence of each marker wins: an
agent that quotes the instructions early and answers at the end means the answer. Notes may run over
several lines: everything after `NEXT_TASK_NOTES:` up to the next marker belongs to them. A hand-off
without a valid agent name is no hand-off (the title and notes alone name nobody to do the work).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import structlog

from conveyor.core.task import SAFE_NAME

log = structlog.get_logger()

TITLE_LIMIT = 200
NOTES_LIMIT = 4000
_MARKER = re.compile(
    r"^[\s>*_`#-]*(NEXT_AGENT|NEXT_TASK_TITLE|NEXT_TASK_NOTES)\s*[*_`]*\s*:[*_`]*[ \t]*(.*)$", re.IGNORECASE)
_DECORATION = "*_` \t"
_NOBODY = frozenset({"none", "null", "nobody", "no", "n/a", "na", "-"})


@dataclass(frozen=True)
class Handoff:
    """Who should continue and with what; becomes a new inbox task (see the board hygiene code)."""

    next_agent: str
    next_task_title: str | None = None
    next_task_notes: str | None = None

    def as_result(self) -> dict[str, str]:
        """The keys of a task's `result` block (README, "A task file"), without the empty ones."""
        fields = {"next_agent": self.next_agent, "next_task_title": self.next_task_title,
                  "next_task_notes": self.next_task_notes}
        return {key: value for key, value in fields.items() if value}


def parse_handoff(text: str | None) -> Handoff | None:
    """The hand-off the text ends with, or None when it names no (valid) next agent."""
    if not text:
        return None
    found = _markers(text.splitlines())
    agent = _clean(found.get("NEXT_AGENT", ""))
    if not agent:
        return None
    agent = agent.split()[0].rstrip(".,;")
    if agent.casefold() in _NOBODY:
        return None
    if not SAFE_NAME.match(agent):
        log.warning("handoff.invalid_agent", reason="not a safe agent name", length=len(agent))
        return None
    title = _clean(found.get("NEXT_TASK_TITLE", ""))[:TITLE_LIMIT] or None
    notes = found.get("NEXT_TASK_NOTES", "").strip()[:NOTES_LIMIT] or None
    return Handoff(agent, title, notes)


def _markers(lines: list[str]) -> dict[str, str]:
    """Marker → its value; notes keep their continuation lines, every marker keeps its last value."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        match = _MARKER.match(line)
        if match is not None:
            current = match[1].upper()
            found[current] = match[2]
        elif current == "NEXT_TASK_NOTES":
            found[current] += "\n" + line
    return found


def _clean(value: str) -> str:
    """A one-line value without the decoration models put around it (`**qa**`, `` `qa` ``)."""
    return " ".join(value.strip().strip(_DECORATION).split())
