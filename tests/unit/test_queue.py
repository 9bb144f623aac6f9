"""The queue: priority, then age, then id; dependencies wait with a reason; cycles are found and grouped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.board.index import Known
from conveyor.core.task import Task
from conveyor.scheduling.queue import order_key, plan


def task(task_id: str, priority: str | None = None, created_at: str | None = None,
         dependencies: list[str] | None = None) -> Task:
    data: dict[str, Any] = {"id": task_id, "agent": "a"}
    if priority is not None:
        data["priority"] = priority
    if created_at is not None:
        data["created_at"] = created_at
    if dependencies is not None:
        data["dependencies"] = dependencies
    return Task(path=Path(f"/board/inbox/{task_id}.yaml"), data=data)


def nothing_known(_task_id: str) -> Known | None:
    return None


def board(**statuses: str) -> Any:
    known = {name.replace("_", "-"): Known(name.replace("_", "-"), status, Path(f"/board/done/a/{name}.yaml"))
             for name, status in statuses.items()}
    return known.get


def ids(tasks: list[Task]) -> list[str]:
    return [t.id for t in tasks]


# ------------------------------------------------------------------ ordering
def test_priority_first_then_age_then_id() -> None:
    tasks = [
        task("n-old", "normal", "2026-01-01T00:00:00Z"),
        task("l-oldest", "low", "2025-01-01T00:00:00Z"),
        task("h-new", "HIGH", "2026-06-01T00:00:00Z"),
        task("c", "critical", "2026-12-01T00:00:00Z"),
        task("h-old", "high", "2026-02-01T00:00:00Z"),
        task("n-b", "normal", "2026-03-01T00:00:00Z"),
        task("n-a", "normal", "2026-03-01T00:00:00Z"),
        task("m", "medium", "2027-01-01T00:00:00Z"),
    ]
    result = plan(tasks, nothing_known, {})
    assert ids(result.runnable) == ["c", "h-old", "h-new", "m", "n-old", "n-a", "n-b", "l-oldest"]
    assert result.waiting == [] and result.cycles == []


def test_missing_or_unknown_priority_ranks_as_normal() -> None:
    tasks = [task("b-none", None, "2026-01-02T00:00:00Z"), task("a-bogus", "urgent", "2026-01-03T00:00:00Z"),
             task("c-low", "low", "2020-01-01T00:00:00Z"), task("d-medium", "medium", "2030-01-01T00:00:00Z")]
    assert ids(plan(tasks, nothing_known, {}).runnable) == ["d-medium", "b-none", "a-bogus", "c-low"]


def test_without_created_at_the_first_seen_time_is_the_age() -> None:
    tasks = [task("a"), task("b"), task("c", created_at="1970-01-01T00:16:40Z")]  # = 1000 s
    first_seen = {"a": 3000.0, "b": 2000.0}
    assert ids(plan(tasks, nothing_known, first_seen).runnable) == ["c", "b", "a"]


def test_unparseable_created_at_falls_back_to_first_seen() -> None:
    tasks = [task("a", created_at="last tuesday"), task("b", created_at="1970-01-01T00:00:10Z")]
    assert ids(plan(tasks, nothing_known, {"a": 5.0}).runnable) == ["a", "b"]


def test_order_key_accepts_offsets_and_naive_times() -> None:
    utc = order_key(task("a", created_at="2026-01-01T10:00:00Z"), 0.0)
    offset = order_key(task("a", created_at="2026-01-01T11:00:00+01:00"), 0.0)
    naive = order_key(task("a", created_at="2026-01-01T10:00:00"), 0.0)
    assert utc == offset == naive


# ------------------------------------------------------------------ dependencies
def test_a_done_dependency_lets_the_task_run() -> None:
    result = plan([task("b", dependencies=["a"])], board(a="done"), {})
    assert ids(result.runnable) == ["b"]


def test_a_failed_dependency_keeps_it_waiting_with_what_to_do() -> None:
    result = plan([task("b", dependencies=["a"])], board(a="error"), {})
    (waiting,) = result.waiting
    assert waiting.task.id == "b"
    assert waiting.reason.startswith("dependency a failed (/board/done/a/a.yaml)")
    assert "requeue it, or drop it from `dependencies`" in waiting.reason


def test_a_running_dependency_is_named_with_its_state() -> None:
    (waiting,) = plan([task("b", dependencies=["a"])], board(a="assigned"), {}).waiting
    assert waiting.reason == "waiting for a (assigned)"


def test_a_queued_dependency_waits_for_it_in_the_same_plan() -> None:
    result = plan([task("b", "critical", dependencies=["a"]), task("a", "low")], nothing_known, {})
    assert ids(result.runnable) == ["a"]
    (waiting,) = result.waiting
    assert waiting.reason == "waiting for a (queued)"


def test_an_unknown_dependency_waits_until_it_appears() -> None:
    (waiting,) = plan([task("b", dependencies=["ghost"])], nothing_known, {}).waiting
    assert waiting.reason == "waiting for ghost, which is not on the board yet"


def test_all_reasons_are_listed() -> None:
    deps = ["done-one", "failed-one", "ghost"]
    (waiting,) = plan([task("b", dependencies=deps)], board(done_one="done", failed_one="error"), {}).waiting
    assert "done-one" not in waiting.reason
    assert "failed-one failed" in waiting.reason and "ghost" in waiting.reason
    assert waiting.reason.index("failed-one") < waiting.reason.index("ghost")


def test_entries_that_are_not_ids_are_ignored() -> None:
    result = plan([task("b", dependencies=["DDR-011 (completed)"])], nothing_known, {})
    assert ids(result.runnable) == ["b"]


def test_waiting_tasks_keep_queue_order() -> None:
    tasks = [task("low", "low", dependencies=["x"]), task("high", "high", dependencies=["x"])]
    assert [w.task.id for w in plan(tasks, nothing_known, {}).waiting] == ["high", "low"]


# ------------------------------------------------------------------ cycles
def test_a_two_task_cycle_is_reported_once() -> None:
    result = plan([task("a", dependencies=["b"]), task("b", dependencies=["a"])], nothing_known, {})
    assert [ids(group) for group in result.cycles] == [["a", "b"]]
    assert result.runnable == [] and result.waiting == []


def test_a_self_dependency_is_a_cycle() -> None:
    result = plan([task("a", dependencies=["a"])], nothing_known, {})
    assert [ids(group) for group in result.cycles] == [["a"]]


def test_a_longer_cycle_and_a_task_downstream_of_it() -> None:
    tasks = [task("a", dependencies=["c"]), task("b", dependencies=["a"]), task("c", dependencies=["b"]),
             task("downstream", dependencies=["a"]), task("free")]
    result = plan(tasks, nothing_known, {})
    assert [ids(group) for group in result.cycles] == [["a", "b", "c"]]
    assert ids(result.runnable) == ["free"]
    (waiting,) = result.waiting
    assert (waiting.task.id, waiting.reason) == ("downstream", "waiting for a (queued)")


def test_separate_cycles_are_separate_groups() -> None:
    tasks = [task("a", dependencies=["b"]), task("b", dependencies=["a"]),
             task("x", dependencies=["y"]), task("y", dependencies=["x"])]
    groups = [ids(group) for group in plan(tasks, nothing_known, {}).cycles]
    assert sorted(groups) == [["a", "b"], ["x", "y"]]


def test_a_diamond_is_not_a_cycle() -> None:
    tasks = [task("top"), task("left", dependencies=["top"]), task("right", dependencies=["top"]),
             task("bottom", dependencies=["left", "right"])]
    result = plan(tasks, nothing_known, {})
    assert result.cycles == []
    assert ids(result.runnable) == ["top"]
    assert {w.task.id for w in result.waiting} == {"left", "right", "bottom"}


def test_a_dependency_on_a_finished_task_outside_inbox_is_not_a_cycle() -> None:
    result = plan([task("b", dependencies=["a"])], board(a="done"), {})
    assert result.cycles == [] and ids(result.runnable) == ["b"]
