"""What runs next from a roadmap, why the rest waits, and the `conveyor roadmap` outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import FIXTURES, REPO_ROOT

from conveyor.roadmap.edit import set_status, status_completed
from conveyor.roadmap.parse import parse_roadmap
from conveyor.roadmap.select import Selection, count_in_flight, explain, next_runnable, to_json

DATA = Path(__file__).parent / "data" / "roadmaps"
PHASES_FIXTURE = FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md"
# The plan as it stood on 2026-11-20, frozen: a realistic multi-priority roadmap with known contents.
OWN_ROADMAP = REPO_ROOT / "tests" / "unit" / "data" / "roadmaps" / "conveyor-plan-2026-11-20.ROADMAP.md"

SMALL = """# Plan

### 🔴 **PRIORITY 1: Analytics** ⚡ NEW
**Status**: 🔄 In Progress (task 2026-01-01T0000-backend-dev-analytics)
**Agent**: backend-dev

### PRIORITY 2: Daemon
**Status**: 📝 Planned
**Dependency**: Requires PRIORITY 1 (Analytics) completed

### PRIORITY 3: Docs
**Status**: 📝 Planned
**Dependency**: None

### PRIORITY 3.5: Examples
**Status**: TODO
"""


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def reason_for(selection: Selection, number: str) -> str | None:
    return next((w.reason for w in selection.waiting if w.item.number == number), None)


def numbers_next(text: str, limit: int = 1, in_flight: int = 0) -> list[str]:
    return next_runnable(parse_roadmap(text), in_flight_limit=limit, in_flight=in_flight).next_numbers


def test_first_eligible_planned_item_in_document_order() -> None:
    selection = next_runnable(parse_roadmap(SMALL), in_flight_limit=1, in_flight=0)
    assert selection.next_numbers == ["3"]
    assert reason_for(selection, "2") == "waits for PRIORITY 1 (Analytics): in_progress"
    assert reason_for(selection, "3.5") == "limit of 1 in flight reached"
    assert reason_for(selection, "3") is None
    assert reason_for(selection, "1") is None  # only planned items are explained


def test_limit_counts_what_is_already_in_flight() -> None:
    assert numbers_next(SMALL, limit=3, in_flight=1) == ["3", "3.5"]
    assert numbers_next(SMALL, limit=2, in_flight=2) == []
    assert numbers_next(SMALL, limit=1, in_flight=5) == []
    assert numbers_next(SMALL, limit=0, in_flight=0) == []
    selection = next_runnable(parse_roadmap(SMALL), in_flight_limit=2, in_flight=2)
    assert reason_for(selection, "3") == "limit of 2 in flight reached"


def test_completing_a_dependency_releases_the_next_item() -> None:
    done = set_status(SMALL, "1", status_completed())
    assert numbers_next(done, limit=1) == ["2"]
    assert numbers_next(done, limit=5) == ["2", "3", "3.5"]


def test_fixture_nothing_runs_until_phase_1_completes() -> None:
    text = read(PHASES_FIXTURE)
    selection = next_runnable(parse_roadmap(text), in_flight_limit=2, in_flight=0)
    assert selection.next_numbers == []
    assert reason_for(selection, "1") == "has parts (1.1, 1.2, 1.3, 1.4, 1.5, 1.6); they run instead"
    assert reason_for(selection, "1.2") == "waits for 1.1 Core Decision & Glossary (6-8h): in_progress"
    assert reason_for(selection, "6") is None  # "Specification Proposed" is not planned
    released = set_status(text, "1.1", status_completed())
    selection = next_runnable(parse_roadmap(released), in_flight_limit=1, in_flight=0)
    assert selection.next_numbers == ["1.2"]
    assert reason_for(selection, "1.3") == "limit of 1 in flight reached"
    assert reason_for(selection, "1.4") == (
        "waits for 1.2 SELECT_APPROPRIATE_AGENT Tactic (10-12h): planned; "
        "waits for 1.3 Agent Profile Schema Enhancement (8-10h): planned")
    assert numbers_next(released, limit=2) == ["1.2", "1.3"]


def test_own_roadmap_waits_for_the_core_pipeline() -> None:
    text = read(OWN_ROADMAP)
    roadmap = parse_roadmap(text)
    selection = next_runnable(roadmap, in_flight_limit=1, in_flight=count_in_flight(roadmap))
    assert selection.next_numbers == []
    assert reason_for(selection, "2") == "waits for PRIORITY 1 (Core Pipeline): in_progress"
    done = set_status(text, "1", status_completed())
    assert numbers_next(done, limit=2) == ["2", "3"]
    assert "waits for PRIORITY 3 (ROADMAP.md-Driven Work and Pull Requests): planned" in (
        reason_for(next_runnable(parse_roadmap(done), in_flight_limit=2, in_flight=0), "3.5") or "")


def test_reasons_for_unknown_unreadable_and_unfinished_dependencies() -> None:
    selection = next_runnable(parse_roadmap(read(DATA / "priority-mixed.ROADMAP.md")), in_flight_limit=5,
                              in_flight=0)
    assert selection.next_numbers == ["2.5", "4.2", "2_2"]   # 2_2: the repeated PRIORITY 2 (issue 15)
    assert reason_for(selection, "10") == "unknown dependency 12"
    assert reason_for(selection, "9") == (
        "cannot read the dependency 'After the v1 release ships'; name items, e.g. 'Requires PRIORITY 1 completed'")
    assert reason_for(selection, "8") == "waits for PRIORITY 7 (Agent Interaction UI): other"
    assert reason_for(selection, "5") == "waits for PRIORITY 3 (Streamlit Analytics Dashboard): in_review"


def test_container_dependencies_hold_back_its_parts() -> None:
    selection = next_runnable(parse_roadmap(read(DATA / "steps-derived.ROADMAP.md")), in_flight_limit=5,
                              in_flight=0)
    assert selection.next_numbers == ["4"]
    assert reason_for(selection, "2.1") == (
        "waits for 1 Billing Revamp: in_progress (needed by 2 Search, which contains it)")
    assert reason_for(selection, "1.3") == "waits for 1.2 API: in_progress"


@pytest.mark.parametrize(("status", "expected"), [
    ("⚠️ Blocked (budget)", "part of PRIORITY 1 (Parent), which is blocked"),
    ("✅ Done", "part of PRIORITY 1 (Parent), which is completed"),
    ("Cancelled", "part of PRIORITY 1 (Parent), which is other"),
])
def test_parts_of_a_stopped_container_do_not_start(status: str, expected: str) -> None:
    text = f"## PRIORITY 1: Parent\n**Status**: {status}\n### Phase 1: Child\n- Status: Planned\n"
    selection = next_runnable(parse_roadmap(text), in_flight_limit=1, in_flight=0)
    assert (selection.next_numbers, reason_for(selection, "1.1")) == ([], expected)


def test_parts_of_a_planned_container_start() -> None:
    text = "## PRIORITY 1: Parent\n**Status**: Planned\n### Phase 1: Child\n- Status: Planned\n"
    assert numbers_next(text) == ["1.1"]


def test_count_in_flight_counts_leaves_in_progress_and_in_review() -> None:
    roadmap = parse_roadmap(read(DATA / "priority-mixed.ROADMAP.md"))
    assert count_in_flight(roadmap) == 2  # PRIORITY 2 in progress (task ...), PRIORITY 3 in review (url)
    # issue 15: 1.1, 2, 3 and 5 are In Progress by the people who wrote the file, not Conveyor's slots
    # (they used to count, so a real roadmap with max_in_flight: 1 started nothing)
    assert count_in_flight(parse_roadmap(read(PHASES_FIXTURE))) == 0


def test_items_a_person_marked_in_progress_do_not_take_conveyors_slot() -> None:
    text = ("# R\n\n### PRIORITY 1: Theirs\n\n**Status**: 🔄 In Progress\n\n"
            "### PRIORITY 2: Next\n\n**Status**: 📝 Planned\n")
    roadmap = parse_roadmap(text)
    selection = next_runnable(roadmap, in_flight_limit=1, in_flight=count_in_flight(roadmap))
    assert selection.next_numbers == ["2"]
    ours = text.replace("In Progress\n", "In Progress (task 2026-01-01T0000-dev-theirs)\n")
    roadmap = parse_roadmap(ours)
    assert next_runnable(roadmap, in_flight_limit=1, in_flight=count_in_flight(roadmap)).next_numbers == []


def test_json_document_has_exactly_the_documented_shape() -> None:
    roadmap = parse_roadmap(SMALL)
    document = to_json(roadmap, next_runnable(roadmap, in_flight_limit=1, in_flight=0))
    assert json.loads(json.dumps(document)) == {
        "items": [
            {"number": "1", "title": "Analytics", "status": "in_progress", "dependencies": [],
             "agent": "backend-dev", "task_id": "2026-01-01T0000-backend-dev-analytics"},
            {"number": "2", "title": "Daemon", "status": "planned", "dependencies": ["1"], "agent": None,
             "task_id": None},
            {"number": "3", "title": "Docs", "status": "planned", "dependencies": [], "agent": None,
             "task_id": None},
            {"number": "3.5", "title": "Examples", "status": "planned", "dependencies": [], "agent": None,
             "task_id": None},
        ],
        "next": ["3"],
    }


def test_explain_lists_items_next_waiting_and_problems() -> None:
    roadmap = parse_roadmap(read(DATA / "priority-mixed.ROADMAP.md"))
    text = explain(roadmap, next_runnable(roadmap, in_flight_limit=1, in_flight=0))
    assert "Roadmap: 16 items" in text
    assert "  PRIORITY 2.5 (Basic Autonomous Development Daemon) (agent backend-dev)" in text
    assert "  4.2 Alert rules (6h): limit of 1 in flight reached" in text
    assert "other (no status line)" in text
    assert "ROADMAP.md:148: item number 2" in text
    table = text.splitlines()[1:17]
    assert table[0].split() == ["NUMBER", "STATUS", "AGENT", "TITLE"]
    assert any(line.startswith("    4.1 ") for line in table)  # parts are indented under their container


def test_explain_nothing_to_start_and_empty_roadmap() -> None:
    roadmap = parse_roadmap(read(PHASES_FIXTURE))
    assert "Starts next: nothing" in explain(roadmap, next_runnable(roadmap, in_flight_limit=1, in_flight=0))
    empty = parse_roadmap("# Just notes\n\nNothing numbered here.\n")
    text = explain(empty, next_runnable(empty, in_flight_limit=1, in_flight=0))
    assert text.startswith("No roadmap items found")
