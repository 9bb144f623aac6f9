"""Hand-off lines in an agent's final text become `result.next_agent` / `next_task_title` / `next_task_notes`."""

from __future__ import annotations

import pytest

from conveyor.board.handoff import Handoff, parse_handoff


def test_plain_lines_at_the_end() -> None:
    text = "Added the endpoint.\n\nNEXT_AGENT: qa\nNEXT_TASK_TITLE: Test the endpoint\nNEXT_TASK_NOTES: cover 404s"
    assert parse_handoff(text) == Handoff("qa", "Test the endpoint", "cover 404s")


def test_decorated_markers_and_values_are_understood() -> None:
    text = "- **NEXT_AGENT:** `frontend-dev`\n* next_task_title: **Wire the form**\n> NEXT_TASK_NOTES:   keep it small"
    assert parse_handoff(text) == Handoff("frontend-dev", "Wire the form", "keep it small")


def test_notes_run_over_several_lines_until_the_next_marker() -> None:
    text = "NEXT_TASK_NOTES: first\nsecond\n\nthird\nNEXT_AGENT: qa"
    assert parse_handoff(text) == Handoff("qa", None, "first\nsecond\n\nthird")


def test_the_last_occurrence_wins() -> None:
    text = "I was told to end with NEXT_AGENT lines.\nNEXT_AGENT: <name>\n...\nNEXT_AGENT: reviewer"
    handoff = parse_handoff(text)
    assert handoff is not None and handoff.next_agent == "reviewer"


@pytest.mark.parametrize("text", [None, "", "All done, nothing else.", "NEXT_AGENT: none", "NEXT_AGENT: N/A",
                                  "NEXT_AGENT:", "NEXT_TASK_TITLE: orphan title", "NEXT_AGENT: ../../etc"])
def test_no_valid_agent_means_no_handoff(text: str | None) -> None:
    assert parse_handoff(text) is None


def test_a_marker_in_the_middle_of_a_sentence_is_not_a_handoff() -> None:
    assert parse_handoff("Say NEXT_AGENT: qa if another agent should continue.") is None


def test_as_result_leaves_out_empty_fields() -> None:
    assert Handoff("qa").as_result() == {"next_agent": "qa"}
    assert Handoff("qa", "T", "N").as_result() == {"next_agent": "qa", "next_task_title": "T", "next_task_notes": "N"}


def test_an_agent_name_with_a_trailing_full_stop_is_cleaned() -> None:
    handoff = parse_handoff("NEXT_AGENT: qa-engineer.")
    assert handoff is not None and handoff.next_agent == "qa-engineer"
