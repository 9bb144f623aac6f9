"""Reading real roadmaps in both styles, and surviving whatever else people write."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tests.conftest import FIXTURES, REPO_ROOT

from conveyor.roadmap.model import ItemKind, Roadmap, RoadmapItemNotFound, Status, classify_status
from conveyor.roadmap.parse import agent_name, dependency_refs, parse_roadmap

DATA = Path(__file__).parent / "data" / "roadmaps"
PHASES_FIXTURE = FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md"
# The plan as it stood on 2026-11-20, frozen: a realistic multi-priority roadmap with known contents.
OWN_ROADMAP = REPO_ROOT / "tests" / "unit" / "data" / "roadmaps" / "conveyor-plan-2026-11-20.ROADMAP.md"
LIVE_ROADMAP = REPO_ROOT / "roadmap" / "ROADMAP.md"   # this repository's roadmap as it is today
ALL_ROADMAPS = [PHASES_FIXTURE, LIVE_ROADMAP, *sorted(DATA.glob("*.md"))]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def parse_file(path: Path) -> Roadmap:
    return parse_roadmap(read(path))


def summary(roadmap: Roadmap) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(item.number, item.status.value, item.dependencies) for item in roadmap]


# --- the real initiatives/phases roadmap ------------------------------------------------------------


def test_fixture_items_numbers_statuses_and_dependencies() -> None:
    roadmap = parse_file(PHASES_FIXTURE)
    assert summary(roadmap) == [
        ("1", "planned", ()),
        ("1.1", "in_progress", ()),
        ("1.2", "planned", ("1.1",)),
        ("1.3", "planned", ("1.1",)),
        ("1.4", "planned", ("1.2", "1.3")),
        ("1.5", "planned", ("1.2", "1.3", "1.4")),
        ("1.6", "planned", ("1.5",)),
        ("2", "in_progress", ()),
        ("3", "in_progress", ()),
        ("4", "completed", ()),
        ("5", "in_review", ()),
        ("6", "other", ()),
    ]
    assert roadmap.problems == ()


def test_fixture_phases_are_parts_of_their_initiative() -> None:
    roadmap = parse_file(PHASES_FIXTURE)
    initiative = roadmap.item("1")
    assert initiative.title == "Agent Specialization Hierarchy"
    assert initiative.status_text == "Approved - Implementation Pending"
    assert initiative.children == ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6")
    assert not initiative.is_leaf
    phase = roadmap.item("1.2")
    assert (phase.parent, phase.kind, phase.title) == ("1", ItemKind.PHASE, "SELECT_APPROPRIATE_AGENT Tactic (10-12h)")
    assert roadmap.item("1.1").title == "Core Decision & Glossary (6-8h)"  # "- PARTIALLY COMPLETE" is status
    assert roadmap.item("1.1").status_text == "DDR-011 completed ✅, GLOSSARY.md updates pending"


def test_fixture_assigned_lines_name_the_first_agent() -> None:
    roadmap = parse_file(PHASES_FIXTURE)
    agents = {item.number: item.agent for item in roadmap}
    assert agents["1.2"] == "architect-alphonso"  # "Architect Alphonso (tactic doc), Python Pedro (...)"
    assert agents["1.3"] == "curator-claire"
    assert agents["1.6"] == "scribe-sally"
    assert agents["1.1"] is None  # no Assigned line; Owner lines are people, not agents
    assert agents["2"] is None


def test_fixture_line_numbers_point_at_heading_and_status() -> None:
    text = read(PHASES_FIXTURE)
    lines = text.split("\n")
    for item in parse_roadmap(text):
        assert lines[item.heading_line].startswith("#")
        assert item.status_line is not None
        assert item.status_text in lines[item.status_line]
        assert "Status" in lines[item.status_line]
    phase = parse_roadmap(text).item("1.4")
    assert lines[phase.heading_line] == "#### Phase 4: Manager Mike Enhancement (10-12h)"
    assert lines[phase.status_line or 0] == "- Status: Not Started"


def test_fixture_body_is_the_section_text_for_the_agent() -> None:
    roadmap = parse_file(PHASES_FIXTURE)
    body = roadmap.item("1.2").body
    assert body.startswith("- Status: Not Started")
    assert "Create `doctrine/tactics/SELECT_APPROPRIATE_AGENT.tactic.md`" in body
    assert "Phase 3" not in body  # the next phase is its own section
    assert "Initiative-level tracking" in roadmap.item("2").body
    assert not roadmap.item("2").body.endswith("---")


def test_document_status_and_unnumbered_headings_are_not_items() -> None:
    roadmap = parse_file(PHASES_FIXTURE)
    titles = {item.title for item in roadmap}
    assert "Repository Roadmap" not in titles  # "# Repository Roadmap" has "**Status:** Active"
    assert "Current Quarter (2026 Q1)" not in titles
    assert len(roadmap) == 12


# --- PRIORITY style ---------------------------------------------------------------------------------


def test_own_roadmap_parses_as_the_plan() -> None:
    roadmap = parse_file(OWN_ROADMAP)
    assert summary(roadmap) == [
        ("1", "in_progress", ()),
        ("2", "planned", ("1",)),
        ("3", "planned", ("1",)),
        ("3.5", "planned", ("1", "3")),
        ("4", "planned", ("1", "2")),
        ("5", "planned", ("4",)),
        ("6", "other", ("2",)),
        ("7", "blocked", ("2",)),
    ]
    assert roadmap.item("1").task_id == "2026-11-20T0900-backend-dev-core-pipeline"
    assert roadmap.item("1").title == "Core Pipeline"
    assert roadmap.item("3").title == "ROADMAP.md-Driven Work and Pull Requests"  # "⚡ NEW" removed
    assert roadmap.item("4").title == "Service Hardening"  # "Priority 4 - Service Hardening"
    assert roadmap.item("3.5").agent == "python-pedro"
    assert roadmap.problems == ()  # the template inside the code fence is not a PRIORITY N item


def test_priority_mixed_items() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert summary(roadmap) == [
        ("1", "completed", ()),
        ("2", "in_progress", ()),
        ("2.5", "planned", ("1",)),
        ("3", "in_review", ("1", "2.5")),
        ("4", "in_progress", ("1",)),
        ("4.1", "completed", ()),
        ("4.2", "planned", ("4.1",)),
        ("4.3", "planned", ("4.1", "4.2")),
        ("4.5", "completed", ()),
        ("5", "planned", ("3",)),
        ("7", "other", ()),
        ("8", "planned", ("7",)),
        ("9", "planned", ()),
        ("10", "planned", ("12",)),
        ("11", "completed", ()),
        ("2_2", "planned", ()),   # issue 15: a repeated number is kept (it used to be left out)
    ]


def test_priority_titles_lose_emoji_bold_and_tags() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("1").title == "Analytics & Observability"
    assert roadmap.item("2").title == "Roadmap Management CLI"
    assert roadmap.item("2.5").title == "Basic Autonomous Development Daemon"
    assert roadmap.item("3").title == "Streamlit Analytics Dashboard"
    assert roadmap.item("4.2").title == "Alert rules (6h)"
    assert roadmap.item("4.5").title == "Notifications"
    assert roadmap.item("11").title == "추가 복잡도 개선 (3개)"


def test_priority_status_task_and_pr_url() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("1").status_text == "✅ Completed"  # written "**Status:** ✅ Completed"
    assert roadmap.item("2").task_id == "2025-10-09T1200-backend-dev-roadmap-cli"
    assert roadmap.item("3").pr_url == "https://github.com/example/coffee/pull/42"
    assert roadmap.item("3").task_id is None
    assert roadmap.item("8").status_text == "Planned"  # "**Status: Planned**": the closing ** is markup


def test_priority_agents() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("2.5").agent == "backend-dev"  # written in backticks
    assert roadmap.item("3").agent == "frontend-freddy"
    assert roadmap.item("4.2").agent == "ops-olivia"
    assert roadmap.item("4.3").agent is None  # "Assigned: TBD"
    assert roadmap.item("5").agent == "zoe-backend"


def test_heading_status_is_used_when_there_is_no_status_line() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    item = roadmap.item("4.5")
    assert (item.status, item.status_line, item.status_text) == (Status.COMPLETED, None, "✅ COMPLETE")
    assert roadmap.item("11").status is Status.COMPLETED


def test_priority_without_status_line_is_other_and_reported() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    item = roadmap.item("7")
    assert (item.status, item.status_text, item.status_line) == (Status.OTHER, "", None)
    messages = [p.message for p in roadmap.problems]
    assert "PRIORITY 7 has no status line, so it will not be started" in messages
    assert any(p.line == item.heading_line + 1 for p in roadmap.problems)


def test_priorities_are_never_parts_even_at_deeper_levels() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("5").parent is None  # "#### PRIORITY 5" right after "## Priority 4.5"
    assert roadmap.item("4.5").children == ()
    assert roadmap.item("4.5").body == "Desktop and Slack notifications, shipped without a status line."


def test_completed_projects_list_is_not_priorities() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("1").title == "Analytics & Observability"  # not "Core Architecture Refactoring"
    assert "Core Architecture Refactoring" not in {item.title for item in roadmap}


def test_headings_in_code_fences_and_comments_are_ignored() -> None:
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("9").title == "Multi-repository Support"  # not the fenced "PRIORITY 9" example
    assert roadmap.get("99") is None  # inside a ~~~ fence
    assert roadmap.get("3.7") is None  # inside <!-- -->
    assert roadmap.item("2").status_line == 42  # the fenced "**Status**: 📝 Planned" is not its status


def test_a_repeated_number_keeps_both_items_under_stable_keys_and_reports() -> None:
    """Issue 15: the later item used to be left out (Coffee Maker's own parser lists both)."""
    roadmap = parse_file(DATA / "priority-mixed.ROADMAP.md")
    assert roadmap.item("2").title == "Roadmap Management CLI"
    assert roadmap.item("2_2").title == "Old Roadmap CLI Notes"
    duplicate = [p for p in roadmap.problems if "also used" in p.message]
    assert len(duplicate) == 1
    assert duplicate[0].line == 148 and "listed as 2_2" in duplicate[0].message


def test_user_story_headings_are_items() -> None:
    text = ("# R\n\n## US-031: Custom AI Development Environment\n\n**Status**: 📝 Planned\n\n"
            "### US-047: Enforce CFR-008 📝 Planned\n\n## US-031: Again\n\n**Status**: ✅ Complete\n")
    roadmap = parse_roadmap(text)
    assert [(i.number, i.title, i.status.value) for i in roadmap] == [
        ("US-031", "Custom AI Development Environment", "planned"), ("US-047", "Enforce CFR-008", "planned"),
        ("US-031_2", "Again", "completed")]


def test_written_number_beats_a_derived_one() -> None:
    text = ("### PRIORITY 3: Core\n**Status**: Planned\n#### Phase 5: Part\n- Status: Planned\n"
            "### PRIORITY 3.5: Later\n**Status**: Planned\n")
    roadmap = parse_roadmap(text)
    assert roadmap.item("3.5").title == "Later"
    assert roadmap.item("3").children == ()
    assert [p.line for p in roadmap.problems] == [3]


def test_steps_and_derived_container_status() -> None:
    roadmap = parse_file(DATA / "steps-derived.ROADMAP.md")
    assert summary(roadmap) == [
        ("1", "in_progress", ()),  # no status line: done + in progress + planned parts
        ("1.1", "completed", ()),
        ("1.2", "in_progress", ("1.1",)),
        ("1.3", "planned", ("1.1", "1.2")),  # "Steps 1-2"
        ("2", "planned", ("1",)),  # "Initiative 1"
        ("2.1", "planned", ()),  # dotted numbers are kept as written
        ("2.2", "blocked", ()),
        ("3", "planned", ("1", "2")),  # a bare "1, 2" list
        ("4", "planned", ()),  # "State" and "Requires: nothing"
    ]
    assert roadmap.item("1").status_text == ""
    assert roadmap.item("1.3").agent == "frontend-freddy"
    assert roadmap.item("1.1").agent == "data-dana"


# --- small documents --------------------------------------------------------------------------------


@pytest.mark.parametrize(("heading", "number", "title", "kind"), [
    ("### 🔴 **PRIORITY 2: Basic Autonomous Development Daemon** ⚡ NEW", "2",
     "Basic Autonomous Development Daemon", ItemKind.PRIORITY),
    ("## PRIORITY 3.5: Isolation", "3.5", "Isolation", ItemKind.PRIORITY),
    ("# Priority 4 - Service hardening", "4", "Service hardening", ItemKind.PRIORITY),
    ("#### priority #6 — Docs ##", "6", "Docs", ItemKind.PRIORITY),
    ("### PRIORITY 7: **Bold** word inside", "7", "Bold word inside", ItemKind.PRIORITY),
    ("### PRIORITY 08: Leading zero", "8", "Leading zero", ItemKind.PRIORITY),
    ("### 1. Agent Specialization Hierarchy (NEW)", "1", "Agent Specialization Hierarchy", ItemKind.NUMBERED),
    ("### 2) Second", "2", "Second", ItemKind.NUMBERED),
    ("### 2.4 Dotted", "2.4", "Dotted", ItemKind.NUMBERED),
    ("### Phase 2: SELECT_APPROPRIATE_AGENT Tactic (10-12h)", "2",
     "SELECT_APPROPRIATE_AGENT Tactic (10-12h)", ItemKind.PHASE),
    ("### Step 3 - Ship it (DONE)", "3", "Ship it", ItemKind.PHASE),
    ("### 1. Add `conveyor roadmap` ✨ [NEW]", "1", "Add `conveyor roadmap`", ItemKind.NUMBERED),
])
def test_heading_spellings(heading: str, number: str, title: str, kind: ItemKind) -> None:
    roadmap = parse_roadmap(f"{heading}\n\n**Status**: 📝 Planned\n")
    assert [(i.number, i.title, i.kind) for i in roadmap] == [(number, title, kind)]


@pytest.mark.parametrize("heading", [
    "### 2026 Roadmap", "### Priority matrix", "#### Phase breakdown", "###NoSpace 1. x", "####### 1. Seven",
    "    ### 1. Indented code", "### Current Quarter (2026 Q1)",
])
def test_headings_that_are_not_items(heading: str) -> None:
    assert parse_roadmap(f"{heading}\n**Status**: Planned\n").items == ()


@pytest.mark.parametrize(("written", "status"), [
    ("📝 Planned", Status.PLANNED), ("Planned", Status.PLANNED), ("Not Started", Status.PLANNED),
    ("Pending", Status.PLANNED), ("TODO", Status.PLANNED), ("To Do", Status.PLANNED), ("📝", Status.PLANNED),
    ("Approved - Implementation Pending", Status.PLANNED), ("Backlog", Status.PLANNED),
    ("🔄 In Progress (task 2026-01-01T0000-a-b)", Status.IN_PROGRESS), ("In Progress", Status.IN_PROGRESS),
    ("🔄", Status.IN_PROGRESS), ("WIP", Status.IN_PROGRESS), ("Partially Complete", Status.IN_PROGRESS),
    ("M4 Batch 4.3 In Progress", Status.IN_PROGRESS), ("🚧 Under way", Status.IN_PROGRESS),
    ("DDR-011 completed ✅, GLOSSARY.md updates pending", Status.IN_PROGRESS),
    ("👀 In Review (https://github.com/o/r/pull/1)", Status.IN_REVIEW), ("In Review", Status.IN_REVIEW),
    ("👀", Status.IN_REVIEW), ("Specification Ready for Review", Status.IN_REVIEW),
    ("✅ Completed", Status.COMPLETED), ("Completed", Status.COMPLETED), ("Complete", Status.COMPLETED),
    ("Done", Status.COMPLETED), ("✅", Status.COMPLETED), ("✅ **COMPLETED** (Sprint 1 & 2)", Status.COMPLETED),
    ("Merged", Status.COMPLETED),
    ("⚠️ Blocked (tests fail: not done)", Status.BLOCKED), ("Blocked", Status.BLOCKED),
    ("⚠️", Status.BLOCKED), ("🚫", Status.BLOCKED), ("On Hold", Status.BLOCKED), ("on-hold", Status.BLOCKED),
    ("Specification Proposed", Status.OTHER), ("Cancelled", Status.OTHER), ("💡 Idea", Status.OTHER),
    ("banana", Status.OTHER), ("", Status.OTHER), ("42", Status.OTHER),
    ("🔄 In Progress (task 2026-x-review-docs)", Status.IN_PROGRESS),  # words inside (...) do not count
    ("In Progress (review pending)", Status.IN_PROGRESS),
    ("(done)", Status.COMPLETED),  # only parentheses: read them rather than nothing
])
def test_status_vocabulary(written: str, status: Status) -> None:
    assert classify_status(written) is status


@pytest.mark.parametrize(("line", "text"), [
    ("**Status**: 📝 Planned", "📝 Planned"), ("**Status:** ✅ Completed", "✅ Completed"),
    ("- Status: Not Started", "Not Started"), ("* **Status**: WIP  ", "WIP"), ("Status: Done", "Done"),
    ("**Status: Planned**", "Planned"), ("  - status : In Review", "In Review"), ("_Status_: Done", "Done"),
    ("**Current Status**: Done", "Done"),
])
def test_status_line_spellings(line: str, text: str) -> None:
    roadmap = parse_roadmap(f"## PRIORITY 1: X\n{line}\n")
    assert (roadmap.item("1").status_text, roadmap.item("1").status_line) == (text, 1)


def test_first_status_line_wins_and_later_ones_are_text() -> None:
    roadmap = parse_roadmap("## PRIORITY 1: X\n**Status**: ✅ Done\n\n- Status: Planned\n")
    assert roadmap.item("1").status is Status.COMPLETED


@pytest.mark.parametrize(("line", "expected"), [
    ("**Dependency**: Requires PRIORITY 1 (Analytics) completed", ["1"]),
    ("**Dependencies**: PRIORITY 1, PRIORITY 2.5", ["1", "2.5"]),
    ("**Dependency**: PRIORITY 2 (Roadmap Management CLI) - uses `coffee-roadmap` for updates", ["2"]),
    ("**Dependency**: Requires PRIORITY 1 and 2", ["1", "2"]),
    ("**Dependency**: Priorities 1-3", ["1", "2", "3"]),
    ("**Dependency**: PRIORITY 1 completed; needs Python 3.11", ["1"]),
    ("**Dependency**: Requires PRIORITY 1 (v2 of the API)", ["1"]),
    ("**Dependency**: 1, 2.5", ["1", "2.5"]),
    ("**Dependency**: #1 and #2", ["1", "2"]),
    ("**Dependency**: None (foundational)", []),
    ("**Dependency**: N/A", []),
    ("**Dependency**: -", []),
    ("**Dependency**: PRIORITY 9 (self is not a dependency)", []),
    ("**Dependency**: PRIORITY 2026-01-05", ["2026"]),  # not a range of two thousand items
])
def test_dependency_spellings(line: str, expected: list[str]) -> None:
    roadmap = parse_roadmap(f"### PRIORITY 9: X\n**Status**: Planned\n{line}\n")
    item = roadmap.item("9")
    assert (list(item.dependencies), item.dependencies_understood) == (expected, True)


def test_unreadable_dependency_is_kept_and_flagged() -> None:
    roadmap = parse_roadmap("### PRIORITY 2: X\n**Status**: Planned\n**Dependency**: after the dashboard ships\n")
    item = roadmap.item("2")
    assert (item.dependencies, item.dependencies_understood) == ((), False)
    assert item.dependency_text == "after the dashboard ships"


def test_phase_dependencies_resolve_within_their_parent() -> None:
    text = ("### 1. A\n**Status:** Planned\n#### Phase 1: a\n- Status: Done\n"
            "### 2. B\n**Status:** Planned\n#### Phase 1: b\n- Status: Planned\n"
            "#### Phase 2: c\n- Status: Planned\n- Dependencies: Phase 1 complete, Initiative 1\n"
            "#### Phase 3: d\n- Status: Planned\n- Dependencies: 1, 2\n")
    roadmap = parse_roadmap(text)
    assert roadmap.item("2.2").dependencies == ("2.1", "1")
    assert roadmap.item("2.3").dependencies == ("2.1", "2.2")  # bare numbers: the item's own numbering


def test_dependency_refs_none_for_free_text_and_empty_for_none() -> None:
    assert dependency_refs("the new design system") is None
    assert dependency_refs("None") == []
    assert dependency_refs("Phase 2, 3, 4 complete") == [("rel", "2"), ("rel", "3"), ("rel", "4")]


@pytest.mark.parametrize(("value", "agent"), [
    ("backend-dev", "backend-dev"), ("`backend-dev`", "backend-dev"), ("**backend-dev**", "backend-dev"),
    ("Architect Alphonso (tactic doc), Python Pedro (implementation)", "architect-alphonso"),
    ("Python Pedro and Backend Benny", "python-pedro"), ("@ops-olivia", "ops-olivia"),
    ("Zoë Backend", "zoe-backend"), ("python_pedro", "python-pedro"), ("Curator Claire / Scribe Sally",
                                                                       "curator-claire"),
    ("TBD", None), ("unassigned", None), ("", None), ("(someone)", None), ("日本語", None),
    ("backend-dev - primary", "backend-dev"), ("x" * 200, None),
])
def test_agent_names(value: str, agent: str | None) -> None:
    assert agent_name(value) == agent


def test_agent_line_spellings() -> None:
    for key in ("**Agent**:", "Agent:", "- Assigned:", "- Assigned to:", "**Assignee:**"):
        roadmap = parse_roadmap(f"### PRIORITY 1: X\n**Status**: Planned\n{key} Backend Benny\n")
        assert roadmap.item("1").agent == "backend-benny", key


# --- robustness -------------------------------------------------------------------------------------


def test_crlf_bom_and_no_trailing_newline_read_the_same() -> None:
    text = read(DATA / "priority-mixed.ROADMAP.md")
    expected = parse_roadmap(text)
    variants = [text.replace("\n", "\r\n"), "\ufeff" + text, text.rstrip("\n"), "\ufeff" + text.replace("\n", "\r\n")]
    for variant in variants:
        assert parse_roadmap(variant).items == expected.items


def test_bom_before_a_first_line_heading() -> None:
    roadmap = parse_roadmap("\ufeff## PRIORITY 1: First\r\n**Status**: Done")
    assert [(i.number, i.title, i.status, i.status_line) for i in roadmap] == [
        ("1", "First", Status.COMPLETED, 1)]


def test_unclosed_fence_hides_what_follows_and_is_reported() -> None:
    roadmap = parse_roadmap("### PRIORITY 1: A\n**Status**: Planned\n```python\n### PRIORITY 2: B\n**Status**: x\n")
    assert [i.number for i in roadmap] == ["1"]
    assert [(p.line, "never closed" in p.message) for p in roadmap.problems] == [(3, True)]


def test_longer_fences_and_inline_backticks() -> None:
    text = ("````\n```\n### PRIORITY 1: inside\n```\n### PRIORITY 2: still inside\n````\n"
            "```not a fence``` text\n### PRIORITY 3: outside\n**Status**: Planned\n")
    assert [i.number for i in parse_roadmap(text)] == ["3"]


@pytest.mark.parametrize("text", ["", "\n", "\ufeff", "#", "# \n##\n###", "**Status**: Planned", "\r\r\r",
                                  "### PRIORITY", "### PRIORITY 1", "- Status: Done\n### 1.\n"])
def test_degenerate_texts(text: str) -> None:
    roadmap = parse_roadmap(text)
    assert all(item.number for item in roadmap)


def test_missing_item_raises_a_conveyor_error() -> None:
    with pytest.raises(RoadmapItemNotFound, match="no item 42"):
        parse_file(OWN_ROADMAP).item("42")


def _mutate(rng: random.Random, text: str) -> str:
    pieces = [*"#*_-:`~()[]<!-->\r\n\t .0123456789", "PRIORITY ", "Phase ", "**Status**: ", "✅", "📝", "⚠️",
              "\ufeff", "\u2028", "\x00", "é", "```"]
    lines = text.split("\n")
    for _ in range(rng.randint(1, 8)):
        index = rng.randrange(len(lines))
        roll = rng.random()
        if roll < 0.3:
            del lines[index]
            lines = lines or [""]
        elif roll < 0.5:
            lines.insert(index, rng.choice(lines))
        else:
            cut = rng.randint(0, len(lines[index]))
            noise = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
            lines[index] = lines[index][:cut] + noise + lines[index][cut:]
    return "\n".join(lines)


@pytest.mark.parametrize("path", ALL_ROADMAPS, ids=lambda p: p.name)
def test_fuzzed_roadmaps_never_raise_and_stay_consistent(path: Path) -> None:
    rng = random.Random(path.name)
    base = read(path)
    for _ in range(150):
        text = _mutate(rng, base)
        roadmap = parse_roadmap(text)
        lines = text.split("\n")
        numbers = [item.number for item in roadmap]
        assert len(numbers) == len(set(numbers))
        for item in roadmap:
            assert lines[item.heading_line].lstrip(" ").startswith("#")
            if item.status_line is not None:
                assert item.status_text in lines[item.status_line]
            assert all(roadmap.get(child) is not None for child in item.children)


def test_random_garbage_never_raises() -> None:
    rng = random.Random(7)
    alphabet = "#*_-:`~()[]<>!\r\n\t 0123456789.PRIORITYPhaseStatus✅📝\ufeff\u2028\x00é"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        parse_roadmap(text)


@pytest.mark.parametrize("text", [
    "# a" + " " * 100_000 + "b\n",
    "## PRIORITY 1: a" + " " * 100_000 + "b ##\n**Status**: Done\n",
    "### **PRIORITY" + " " * 100_000 + "2** x\n",
    "### PRIORITY 1: " + "✅ " * 50_000 + "\n",
])
def test_very_long_lines_are_read_in_one_pass(text: str) -> None:
    roadmap = parse_roadmap(text)
    assert all(item.status in (Status.COMPLETED, Status.OTHER) for item in roadmap)


def test_this_repositorys_live_roadmap_parses_cleanly() -> None:
    """roadmap/ROADMAP.md drives Conveyor's own daemon: every item must read as intended, with no problem."""
    roadmap = parse_file(LIVE_ROADMAP)
    assert not roadmap.problems, roadmap.problems
    statuses = {item.number: item.status.value for item in roadmap}
    assert all(statuses[n] == "completed" for n in ("1", "2", "3", "4", "5"))
    assert statuses["6"] == "planned" and statuses["7"] == "planned" and statuses["8"] == "other"
    assert roadmap.item("6").dependencies == ("3",) and roadmap.item("6").agent == "backend-dev"
