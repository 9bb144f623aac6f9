"""Status write-back: one line changes, every other byte of the author's file stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import FIXTURES, REPO_ROOT

from conveyor.core.errors import ConveyorError
from conveyor.roadmap.edit import (
    _check_result,
    reapply_status,
    set_status,
    status_blocked,
    status_completed,
    status_edit_conflicts,
    status_in_progress,
    status_in_review,
)
from conveyor.roadmap.model import RoadmapEditConflict, RoadmapEditError, RoadmapItemNotFound, Status
from conveyor.roadmap.parse import parse_roadmap

DATA = Path(__file__).parent / "data" / "roadmaps"
PHASES_FIXTURE = FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md"
ALL_ROADMAPS = [PHASES_FIXTURE, REPO_ROOT / "roadmap" / "ROADMAP.md", *sorted(DATA.glob("*.md"))]

TASK = "2026-11-23T0900-backend-dev-roadmap"
PR = "https://github.com/example/conveyor/pull/7"
NEW_STATUSES = [status_in_progress(TASK), status_in_review(PR), status_completed(), status_blocked("tests fail")]


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """Pairs of differing lines, for texts with the same number of lines."""
    old, new = before.split("\n"), after.split("\n")
    assert len(old) == len(new)
    return [(a, b) for a, b in zip(old, new, strict=True) if a != b]


def inserted_line(before: str, after: str) -> tuple[int, str]:
    """The one line `after` has in addition to `before` (its index and text)."""
    old, new = before.split("\n"), after.split("\n")
    assert len(new) == len(old) + 1
    for index in range(len(new)):
        if new[:index] + new[index + 1:] == old:
            return index, new[index]
    raise AssertionError("more than one line differs")


@pytest.mark.parametrize("path", ALL_ROADMAPS, ids=lambda p: p.name)
def test_set_status_changes_exactly_one_line_for_every_item(path: Path) -> None:
    text = read(path)
    for variant in (text, text.replace("\n", "\r\n"), text.rstrip("\n"), "\ufeff" + text):
        for item in parse_roadmap(variant):
            for value in NEW_STATUSES:
                result = set_status(variant, item.number, value)
                edited = parse_roadmap(result).item(item.number)
                assert edited.status_text == value
                if item.status_line is None:
                    index, line = inserted_line(variant, result)
                    assert index == item.heading_line + 1 and value in line
                else:
                    diff = changed_lines(variant, result)
                    assert len(diff) == 1 or (len(diff) == 0 and item.status_text == value)
                    assert edited.status_line == item.status_line
                    for old, new in diff:  # same key spelling and markers before, same ending after
                        start = old.index(item.status_text) if item.status_text else len(old.rstrip("\r* "))
                        assert new.startswith(old[:start]) and new.endswith(old[start + len(item.status_text):])


@pytest.mark.parametrize(("line", "expected"), [
    ("**Status**: 📝 Planned", "**Status**: ✅ Completed"),
    ("**Status:** 📝 Planned", "**Status:** ✅ Completed"),
    ("- Status: Not Started", "- Status: ✅ Completed"),
    ("* **Status**: WIP  ", "* **Status**: ✅ Completed  "),
    ("**Status: Planned**", "**Status: ✅ Completed**"),
    ("  - status :   Planned", "  - status :   ✅ Completed"),
    ("**Status**:", "**Status**: ✅ Completed"),
])
def test_prefix_markers_and_spacing_are_kept(line: str, expected: str) -> None:
    text = f"### PRIORITY 1: X\n{line}\nbody\n"
    assert set_status(text, "1", status_completed()) == f"### PRIORITY 1: X\n{expected}\nbody\n"


def test_crlf_stays_crlf_and_missing_final_newline_stays_missing() -> None:
    text = "# Plan\r\n\r\n### PRIORITY 1: X\r\n**Status**: 📝 Planned\r\n\r\n### PRIORITY 2: Y\r\n**Status**: Planned"
    result = set_status(text, "1", status_in_progress(TASK))
    assert result == text.replace("📝 Planned", status_in_progress(TASK))
    result = set_status(text, "2", status_completed())
    assert result.endswith("**Status**: ✅ Completed") and result.count("\r\n") == text.count("\r\n")


def test_bom_is_kept() -> None:
    text = "\ufeff### PRIORITY 1: X\n**Status**: Planned\n"
    assert set_status(text, "1", "Done") == "\ufeff### PRIORITY 1: X\n**Status**: Done\n"


def test_missing_status_line_is_inserted_after_the_heading_in_the_neighbours_style() -> None:
    text = read(DATA / "priority-mixed.ROADMAP.md")
    result = set_status(text, "7", status_in_progress(TASK))
    index, line = inserted_line(text, result)
    heading = parse_roadmap(text).item("7").heading_line
    # the nearest priority of the same level (PRIORITY 8, four lines below) writes "**Status: ...**"
    assert (index, line) == (heading + 1, f"**Status: {status_in_progress(TASK)}**")
    assert parse_roadmap(result).item("7").task_id == TASK


def test_inserted_phase_status_uses_the_list_style() -> None:
    text = "### 1. Init\n**Status:** Planned\n#### Phase 1: A\n- Status: Done\n#### Phase 2: B\n- Assigned: x\n"
    roadmap = parse_roadmap(text)
    assert roadmap.get("1.2") is None  # no status line: not an item, nothing to edit
    text = "### 1. Init\n**Status:** Planned\n#### Phase 1: A\n- Status: Done\n"
    result = set_status(text, "1", "Done")
    assert result == "### 1. Init\n**Status:** Done\n#### Phase 1: A\n- Status: Done\n"


def test_inserting_copies_bold_wrapped_style() -> None:
    text = "## PRIORITY 1: A\n**Status: Done**\n\n## PRIORITY 2: B\n\nText.\n"
    result = set_status(text, "2", "📝 Planned")
    assert result == "## PRIORITY 1: A\n**Status: Done**\n\n## PRIORITY 2: B\n**Status: 📝 Planned**\n\nText.\n"


def test_inserting_after_a_last_heading_without_newline() -> None:
    assert set_status("## PRIORITY 1: A", "1", "Done") == "## PRIORITY 1: A\n**Status**: Done"
    assert set_status("x\r\n## PRIORITY 1: A", "1", "Done") == "x\r\n## PRIORITY 1: A\r\n**Status**: Done"
    assert set_status("## PRIORITY 1: A\r\n", "1", "Done") == "## PRIORITY 1: A\r\n**Status**: Done\r\n"


def test_heading_status_item_gets_a_status_line() -> None:
    text = read(DATA / "priority-mixed.ROADMAP.md")
    result = set_status(text, "4.5", status_blocked("flaky webhook"))
    item = parse_roadmap(result).item("4.5")
    assert item.status is Status.BLOCKED and item.status_line == item.heading_line + 1


def test_fenced_lookalikes_are_untouched() -> None:
    text = read(DATA / "priority-mixed.ROADMAP.md")
    result = set_status(text, "2", status_in_review(PR))
    assert "```markdown\n### 🔴 PRIORITY 9: Example inside a code block\n**Status**: 📝 Planned\n```" in result
    assert changed_lines(text, result) == [
        ("**Status**: 🔄 In Progress (task 2025-10-09T1200-backend-dev-roadmap-cli)",
         f"**Status**: 👀 In Review ({PR})")]


def test_fixture_phase_status_edit() -> None:
    text = read(PHASES_FIXTURE)
    result = set_status(text, "1.3", status_in_progress(TASK))
    assert changed_lines(text, result) == [("- Status: Not Started", f"- Status: 🔄 In Progress (task {TASK})")]


def test_missing_item_raises() -> None:
    with pytest.raises(RoadmapItemNotFound) as caught:
        set_status(read(PHASES_FIXTURE), "1.9", status_completed())
    assert isinstance(caught.value, ConveyorError)
    assert "no item 1.9" in str(caught.value) and "1.6" in str(caught.value)


@pytest.mark.parametrize("value", ["", "   ", "two\nlines", "cr\rhere", "sep\u2028here"])
def test_status_must_be_one_line(value: str) -> None:
    with pytest.raises(RoadmapEditError, match="one non-empty line"):
        set_status("## PRIORITY 1: A\n**Status**: Planned\n", "1", value)


def test_status_helpers_round_trip_through_the_parser() -> None:
    text = "## PRIORITY 1: A\n**Status**: Planned\n"
    item = parse_roadmap(set_status(text, "1", status_in_progress(TASK))).item("1")
    assert (item.status, item.task_id) == (Status.IN_PROGRESS, TASK)
    item = parse_roadmap(set_status(text, "1", status_in_review(PR))).item("1")
    assert (item.status, item.pr_url) == (Status.IN_REVIEW, PR)
    item = parse_roadmap(set_status(text, "1", status_completed())).item("1")
    assert item.status is Status.COMPLETED
    item = parse_roadmap(set_status(text, "1", status_blocked("verify failed:\n  pytest (exit 1) — done?"))).item("1")
    assert item.status is Status.BLOCKED
    assert item.status_text == "⚠️ Blocked (verify failed: pytest (exit 1) — done?)"


def test_blocked_reason_is_shortened() -> None:
    value = status_blocked("x" * 500)
    assert len(value) < 230 and value.endswith("…)")
    assert status_blocked("  ") == "⚠️ Blocked (no reason given)"


@pytest.mark.parametrize("task_id", ["", "has space", "../etc", "-leading-dash", "x" * 129])
def test_in_progress_needs_a_task_id(task_id: str) -> None:
    with pytest.raises(RoadmapEditError, match="not a task id"):
        status_in_progress(task_id)


@pytest.mark.parametrize("url", ["github.com/o/r/pull/1", "https://x/pull/1 oops", "https://x/(1)", "ftp://x"])
def test_in_review_needs_a_url(url: str) -> None:
    with pytest.raises(RoadmapEditError, match="not a pull-request URL"):
        status_in_review(url)


# --- concurrent edits by the author -----------------------------------------------------------------


def test_user_edit_elsewhere_is_not_a_conflict_and_survives() -> None:
    read_text = read(PHASES_FIXTURE)
    current = read_text.replace("**Owner:** Analyst Annie", "**Owner:** Analyst Annie, Scribe Sally")
    assert not status_edit_conflicts(read_text, current, "1.2")
    result = reapply_status(read_text, current, "1.2", status_in_progress(TASK))
    assert "**Owner:** Analyst Annie, Scribe Sally" in result
    assert len(changed_lines(current, result)) == 1


def test_user_status_change_is_a_conflict_and_theirs_wins() -> None:
    read_text = read(PHASES_FIXTURE)
    lines = read_text.split("\n")
    status_line = parse_roadmap(read_text).item("1.2").status_line or 0
    lines[status_line] = "- Status: On Hold"
    current = "\n".join(lines)
    assert status_edit_conflicts(read_text, current, "1.2")
    with pytest.raises(RoadmapEditConflict, match=r"item 1\.2"):
        reapply_status(read_text, current, "1.2", status_in_progress(TASK))


def test_removed_or_added_item_is_a_conflict() -> None:
    text = "## PRIORITY 1: A\n**Status**: Planned\n"
    assert status_edit_conflicts(text, "## PRIORITY 2: A\n**Status**: Planned\n", "1")
    assert status_edit_conflicts("# nothing\n", text, "1")
    assert not status_edit_conflicts("# nothing\n", "# still nothing\n", "1")


def test_unchanged_text_reapplies_directly() -> None:
    text = "## PRIORITY 1: A\n**Status**: Planned\n"
    assert reapply_status(text, text, "1", "Done") == "## PRIORITY 1: A\n**Status**: Done\n"


def test_result_check_refuses_an_edit_that_reads_differently() -> None:
    before = parse_roadmap("## PRIORITY 1: A\n**Status**: Planned\n## PRIORITY 2: B\n**Status**: Planned\n")
    lost_item = parse_roadmap("## PRIORITY 1: A\n**Status**: Done\n")
    with pytest.raises(RoadmapEditError, match="left as it is"):
        _check_result(before, lost_item, "1", "Done")
    with pytest.raises(RoadmapEditError):
        _check_result(before, before, "1", "Done")
