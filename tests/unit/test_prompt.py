"""The prompt: instructions, the task in full (including the author's extra keys), and the house rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.core.task import Task
from conveyor.runner.prompt import build_prompt


def prompt_for(data: dict[str, Any], instructions: str | None = None) -> str:
    task = Task(path=Path("/b/inbox/t.yaml"), data={"id": "t", "agent": "a", **data})
    return build_prompt(task, instructions=instructions, board_dir="work/collaboration", roadmap_file="ROADMAP.md")


def test_title_description_and_artefacts() -> None:
    text = prompt_for({"title": "Add /health", "description": "Return {\"status\": \"ok\"}.\n",
                       "artefacts": ["src/health.py", "tests/test_health.py"]})
    assert text.startswith("# Task t: Add /health\n\nReturn {\"status\": \"ok\"}.")
    assert "## Files to create or change\n- src/health.py\n- tests/test_health.py" in text


def test_instructions_come_first() -> None:
    text = prompt_for({"title": "T"}, instructions="  You are the backend developer.\n")
    assert text.startswith("You are the backend developer.\n\n# Task t: T")


def test_blank_instructions_are_skipped() -> None:
    assert prompt_for({"title": "T"}, instructions="  \n").startswith("# Task t: T")


def test_context_notes_and_other_context_but_not_branch_or_repo() -> None:
    text = prompt_for({"context": {"branch": "develop", "repo": "org/name", "notes": ["keep the API", "be quick"],
                                   "milestone": "M6"}})
    assert "## Notes\n- keep the API\n- be quick" in text
    assert "## Context\nmilestone: M6" in text
    assert "develop" not in text and "org/name" not in text


def test_context_given_as_a_string_is_a_note() -> None:
    assert "## Notes\n- keep the API stable" in prompt_for({"context": "keep the API stable"})


def test_the_authors_work_keys_are_included() -> None:
    text = prompt_for({
        "acceptance_criteria": ["ROADMAP updated", "Tests pass"],
        "requirements": {"phase_1": {"title": "Core", "effort": "6-8 hours"}},
        "specification": "specs/SPEC-1.md",
        "deliverables": [],
        "notes": "ask before deleting",
        "estimated_hours": 4,
    })
    assert "## Acceptance criteria\n- ROADMAP updated\n- Tests pass" in text
    assert "## Requirements\nphase_1:\n  title: Core\n  effort: 6-8 hours" in text
    assert "## Specification\nspecs/SPEC-1.md" in text
    assert "## Notes from the author\nask before deleting" in text
    assert "Deliverables" not in text          # empty: left out
    assert "estimated_hours" not in text       # bookkeeping, not instructions


def test_the_rules_say_who_commits_and_what_not_to_touch() -> None:
    text = prompt_for({"title": "T"})
    assert "branch conveyor/t" in text
    assert "Do not commit, push, merge or create branches" in text
    assert "Do not edit ROADMAP.md or anything under work/collaboration/" in text
    assert "NEXT_AGENT:" in text
    assert text.endswith("\n")


def test_a_task_that_expects_no_changes_says_so() -> None:
    assert "may need no file changes" in prompt_for({"expect_changes": False})
    assert "may need no file changes" not in prompt_for({})


def test_building_the_prompt_does_not_change_the_task() -> None:
    data: dict[str, Any] = {"id": "t", "agent": "a", "context": {"branch": "main", "notes": ["n"]}}
    task = Task(path=Path("/t.yaml"), data=data)
    build_prompt(task, instructions=None, board_dir="b", roadmap_file="R.md")
    assert data["context"] == {"branch": "main", "notes": ["n"]}
