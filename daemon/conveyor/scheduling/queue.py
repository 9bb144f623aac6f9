"""Which inbox tasks may run now, in what order, and why the others wait.

Order is priority (critical first), then age (created_at, else when the file was first seen), then id.
A task waits until each dependency is done; a dependency that ended in error, or that no one has
written yet, keeps it waiting with a reason `conveyor status` shows. Tasks that depend on each other in a
cycle can never run: they are reported so the daemon can reject them with the cycle named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from conveyor.board.index import Known
from conveyor.core.task import Task
from conveyor.core.timeutil import parse_iso


@dataclass(frozen=True)
class Waiting:
    task: Task
    reason: str


@dataclass
class Plan:
    runnable: list[Task] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    cycles: list[list[Task]] = field(default_factory=list)


def order_key(task: Task, first_seen: float) -> tuple[int, float, str]:
    created = parse_iso(task.created_at) if task.created_at else None
    return task.priority_rank, created if created is not None else first_seen, task.id


def plan(candidates: Sequence[Task], known: Callable[[str], Known | None],
         first_seen: Mapping[str, float]) -> Plan:
    """Split inbox tasks into runnable (ordered) and waiting (with reasons); find dependency cycles."""
    by_id = {task.id: task for task in candidates}
    cycle_ids = _cycle_members(by_id)
    result = Plan(cycles=_group_cycles(by_id, cycle_ids))
    for task in sorted(candidates, key=lambda t: order_key(t, first_seen.get(t.id, 0.0))):
        if task.id in cycle_ids:
            continue
        reason = _wait_reason(task, by_id, known)
        if reason is None:
            result.runnable.append(task)
        else:
            result.waiting.append(Waiting(task, reason))
    return result


def _wait_reason(task: Task, by_id: Mapping[str, Task], known: Callable[[str], Known | None]) -> str | None:
    reasons = []
    for dep in task.dependencies:
        if dep == task.id:
            continue
        found = known(dep)
        if found is not None:
            if found.status == "done":
                continue
            if found.status == "error":
                reasons.append(f"dependency {dep} failed ({found.path}); fix and requeue it, or drop it from "
                               "`dependencies`")
            else:
                reasons.append(f"waiting for {dep} ({found.status})")
        elif dep in by_id:
            reasons.append(f"waiting for {dep} (queued)")
        else:
            reasons.append(f"waiting for {dep}, which is not on the board yet")
    return "; ".join(reasons) or None


def _cycle_members(by_id: Mapping[str, Task]) -> set[str]:
    """Ids on a dependency cycle among queued tasks.

    Peel off tasks whose queued dependencies are all peeled (Kahn's algorithm); what remains is on a
    cycle or downstream of one, and of those, the members are the ones that reach themselves.
    """
    deps = {node: {d for d in task.dependencies if d in by_id} for node, task in by_id.items()}
    remaining = set(deps)
    peeled = True
    while peeled:
        free = {node for node in remaining if not deps[node] & remaining}
        remaining -= free
        peeled = bool(free)
    return {node for node in remaining if _reaches(node, node, deps, remaining)}


def _reaches(start: str, goal: str, deps: Mapping[str, set[str]], within: set[str]) -> bool:
    seen: set[str] = set()
    frontier = list(deps[start] & within)
    while frontier:
        node = frontier.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            frontier.extend(deps[node] & within)
    return False


def _group_cycles(by_id: Mapping[str, Task], members: set[str]) -> list[list[Task]]:
    """Group cycle members into connected groups (for one message per cycle)."""
    groups: list[list[Task]] = []
    remaining = set(members)
    while remaining:
        start = min(remaining)
        group, frontier = {start}, [start]
        while frontier:
            node = frontier.pop()
            for dep in by_id[node].dependencies:
                if dep in remaining and dep not in group:
                    group.add(dep)
                    frontier.append(dep)
            for other in remaining:
                if node in by_id[other].dependencies and other not in group:
                    group.add(other)
                    frontier.append(other)
        remaining -= group
        groups.append([by_id[i] for i in sorted(group)])
    return groups
