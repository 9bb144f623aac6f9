"""Deciding which roadmap items start now, and saying why every other planned item waits.

Only planned leaves run (an item with parts is done by doing its parts), in document order, when every
dependency of the item and of the items containing it is completed, while fewer than the limit are in
flight. The reasons are sentences for `conveyor roadmap`; `to_json` is that command's machine format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.roadmap.model import Roadmap, RoadmapItem, Status

IN_FLIGHT = (Status.IN_PROGRESS, Status.IN_REVIEW)


@dataclass(frozen=True)
class Waiting:
    """A planned item that is not started now, and why."""

    item: RoadmapItem
    reason: str


@dataclass(frozen=True)
class Selection:
    start: tuple[RoadmapItem, ...]
    waiting: tuple[Waiting, ...]

    @property
    def next_numbers(self) -> list[str]:
        return [item.number for item in self.start]


def count_in_flight(roadmap: Roadmap) -> int:
    """Leaves Conveyor itself started that are in progress or in review (an open pull request holds a slot
    until it is merged). Its status lines name them: `In Progress (task <id>)`, `In Review (<url>)`. An
    item a person marked In Progress is their work, not one of Conveyor's slots."""
    return sum(1 for item in roadmap if item.is_leaf and item.status in IN_FLIGHT
               and (item.task_id is not None or item.pr_url is not None))


def _dependency_reasons(roadmap: Roadmap, item: RoadmapItem, via: RoadmapItem | None) -> list[str]:
    """Why `item`'s own dependencies stop the leaf (reached through the container `via`, if any)."""
    through = f" (needed by {via.label}, which contains it)" if via is not None else ""
    if not item.dependencies_understood:
        return [f"cannot read the dependency '{item.dependency_text}'{through}; "
                "name items, e.g. 'Requires PRIORITY 1 completed'"]
    reasons = []
    for number in item.dependencies:
        dependency = roadmap.get(number)
        if dependency is None:
            reasons.append(f"unknown dependency {number}{through}")
        elif dependency.status is not Status.COMPLETED:
            reasons.append(f"waits for {dependency.label}: {dependency.status.value}{through}")
    return reasons


def blocking_reasons(roadmap: Roadmap, item: RoadmapItem) -> list[str]:
    """Everything that keeps a planned leaf from starting, apart from the in-flight limit."""
    reasons = _dependency_reasons(roadmap, item, None)
    for ancestor in roadmap.ancestors(item):
        if ancestor.status in (Status.BLOCKED, Status.COMPLETED, Status.OTHER):
            reasons.append(f"part of {ancestor.label}, which is {ancestor.status.value}")
        reasons.extend(_dependency_reasons(roadmap, ancestor, ancestor))
    return reasons


def next_runnable(roadmap: Roadmap, *, in_flight_limit: int, in_flight: int) -> Selection:
    """The planned leaves to start now (first eligible in document order, up to the free slots)."""
    free = max(0, in_flight_limit - in_flight)
    start: list[RoadmapItem] = []
    waiting: list[Waiting] = []
    for item in roadmap:
        if item.status is not Status.PLANNED:
            continue
        if not item.is_leaf:
            waiting.append(Waiting(item, f"has parts ({', '.join(item.children)}); they run instead"))
        elif reasons := blocking_reasons(roadmap, item):
            waiting.append(Waiting(item, "; ".join(reasons)))
        elif len(start) >= free:
            waiting.append(Waiting(item, f"limit of {in_flight_limit} in flight reached"))
        else:
            start.append(item)
    return Selection(start=tuple(start), waiting=tuple(waiting))


def to_json(roadmap: Roadmap, selection: Selection) -> dict[str, Any]:
    """The `conveyor roadmap --format json` document (a dict ready for json.dumps)."""
    return {
        "items": [
            {"number": item.number, "title": item.title, "status": item.status.value,
             "dependencies": list(item.dependencies), "agent": item.agent, "task_id": item.task_id}
            for item in roadmap
        ],
        "next": selection.next_numbers,
    }


def _table(roadmap: Roadmap) -> list[str]:
    depth = {item.number: len(roadmap.ancestors(item)) for item in roadmap}
    rows = [("NUMBER", "STATUS", "AGENT", "TITLE")]
    for item in roadmap:
        status = item.status.value
        if item.status is Status.OTHER:
            status += f" ({item.status_text})" if item.status_text else " (no status line)"
        rows.append(("  " * depth[item.number] + item.number, status, item.agent or "-", item.title))
    widths = [max(len(row[col]) for row in rows) for col in range(3)]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  " + row[3] for row in rows]


def explain(roadmap: Roadmap, selection: Selection) -> str:
    """A plain-text report: every item, what starts next, why the rest waits, and what was unreadable."""
    if not roadmap.items:
        lines = ["No roadmap items found: headings need a number ('### PRIORITY 1: Title', '### 1. Title',",
                 "'#### Phase 1: Title') and a status line ('**Status**: 📝 Planned')."]
    else:
        lines = [f"Roadmap: {len(roadmap.items)} items", *_table(roadmap), ""]
        if selection.start:
            lines.append("Starts next:")
            lines += [f"  {item.label}" + (f" (agent {item.agent})" if item.agent else "")
                      for item in selection.start]
        else:
            lines.append("Starts next: nothing")
        if selection.waiting:
            lines.append("Waiting:")
            lines += [f"  {w.item.label}: {w.reason}" for w in selection.waiting]
    if roadmap.problems:
        lines.append("Problems:")
        lines += [f"  {problem.render()}" for problem in roadmap.problems]
    return "\n".join(lines) + "\n"
