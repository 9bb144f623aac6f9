"""The `follow_up:` block of a task file: what the watcher writes loads; anything else is refused naming the
file, the `follow_up.<key>` field and the fix (a hostile board file must not steer a branch or a thread)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.core import yamlio
from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.follow_up import FollowUp, ReplyTo, follow_up_id
from conveyor.core.task import parse_task

SHA = "a" * 40


def block(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"of": "T-1", "pr": 7, "pr_url": "https://github.example/o/r/pull/7",
                             "branch": "conveyor/T-1", "head_sha": SHA, "trigger": "comment",
                             "event_id": "c123456", "author": "alice",
                             "reply_to": {"kind": "issue_comment", "id": 123456},
                             "request": "Please rename foo to bar.\n"}
    for key, item in changes.items():
        if item is None:
            value.pop(key, None)
        else:
            value[key] = item
    return value


def write(tmp_path: Path, follow_up: Any, *, task_id: str | None = None) -> Path:
    if task_id is None:
        event = follow_up.get("event_id", "c1") if isinstance(follow_up, dict) else "c1"
        task_id = f"T-1.fu-{event}"
    document = {"id": task_id, "agent": "dev", "title": "Follow-up on PR #7", "priority": "high",
                "artefacts": [], "follow_up": follow_up}
    path = tmp_path / f"{task_id}.yaml"
    path.write_text(yamlio.dumps(document), encoding="utf-8")
    return path


def problems(path: Path) -> list[Problem]:
    with pytest.raises(TaskFileError) as caught:
        parse_task(path)
    return caught.value.problems


def test_the_watchers_file_loads_as_a_follow_up(tmp_path: Path) -> None:
    task = parse_task(write(tmp_path, block()))
    assert task.follow_up == FollowUp(of="T-1", pr=7, branch="conveyor/T-1", head_sha=SHA, trigger="comment",
                                      event_id="c123456", request="Please rename foo to bar.\n",
                                      pr_url="https://github.example/o/r/pull/7", author="alice",
                                      reply_to=ReplyTo("issue_comment", 123456))
    assert task.warnings == []


def test_a_check_follow_up_needs_no_author_nor_thread(tmp_path: Path) -> None:
    value = block(trigger="check", event_id="ck99", author=None, reply_to=None, round=2,
                  request="job: tests\n...\nFAILED test_x\n")
    follow_up = parse_task(write(tmp_path, value)).follow_up
    assert follow_up is not None and follow_up.is_check and follow_up.round == 2 and follow_up.author is None


def test_an_ordinary_task_has_no_follow_up(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("id: t\nagent: a\nartefacts: []\n", encoding="utf-8")
    assert parse_task(path).follow_up is None


def test_the_id_is_the_original_id_and_the_event(tmp_path: Path) -> None:
    assert follow_up_id("T-1", "rc5") == "T-1.fu-rc5"
    (problem,) = problems(write(tmp_path, block(), task_id="T-1.fu-other"))
    assert problem.field == "id" and "T-1.fu-c123456" in problem.fix


@pytest.mark.parametrize("key", ["of", "pr", "branch", "head_sha", "trigger", "event_id", "request"])
def test_each_required_key_is_named_when_missing(tmp_path: Path, key: str) -> None:
    found = problems(write(tmp_path, block(**{key: None})))
    assert [p.field for p in found] == [f"follow_up.{key}"]
    assert found[0].message == "is missing" and f"`{key}:`" in found[0].fix
    assert found[0].file.endswith(".yaml") and found[0].line is not None


@pytest.mark.parametrize(("changes", "field", "fix"), [
    ({"branch": "main"}, "follow_up.branch", "branch: conveyor/T-1"),
    ({"branch": "conveyor/T-2"}, "follow_up.branch", "branch: conveyor/T-1"),
    ({"branch": "conveyor/T-1:refs/heads/main"}, "follow_up.branch", "branch: conveyor/T-1"),
    ({"branch": "+conveyor/T-1"}, "follow_up.branch", "branch: conveyor/T-1"),
    ({"of": "../T-1", "branch": "conveyor/../T-1"}, "follow_up.of", "the id of the task"),
    ({"of": "T..1"}, "follow_up.of", "the id of the task"),
    ({"pr": "7; rm -rf /"}, "follow_up.pr", "pr: 7"),
    ({"pr": -1}, "follow_up.pr", "pr: 7"),
    ({"pr": True}, "follow_up.pr", "pr: 7"),
    ({"head_sha": "HEAD"}, "follow_up.head_sha", "40-character"),
    ({"head_sha": "--upload-pack=evil"}, "follow_up.head_sha", "40-character"),
    ({"trigger": "push"}, "follow_up.trigger", "review, review_comment, comment, check"),
    ({"event_id": "r1", "trigger": "comment"}, "follow_up.event_id", "start it with c"),
    ({"author": "alice; curl evil"}, "follow_up.author", "login"),
    ({"reply_to": {"kind": "email", "id": 3}}, "follow_up.reply_to", "issue_comment | review_comment"),
    ({"reply_to": {"kind": "review", "id": "x"}}, "follow_up.reply_to", "issue_comment | review_comment"),
    ({"request": ["a", "b"]}, "follow_up.request", "as text"),
    ({"request": "x" * 40_000}, "follow_up.request", "keep it under"),
    ({"round": 0}, "follow_up.round", "1, 2"),
    ({"pr_url": "javascript:alert(1)"}, "follow_up.pr_url", "html_url"),
])
def test_bad_values_are_refused_naming_the_key_and_the_fix(tmp_path: Path, changes: dict[str, Any], field: str,
                                                           fix: str) -> None:
    found = [p for p in problems(write(tmp_path, block(**changes))) if p.field == field]
    assert found, f"no problem on {field}"
    assert fix in found[0].fix
    assert "Fix:" in found[0].render() and field in found[0].render()


def test_a_comment_without_an_author_is_refused(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, block(author=None)))
    assert problem.field == "follow_up.author" and "permitted person" in problem.fix


def test_a_follow_up_that_is_no_mapping_is_refused(tmp_path: Path) -> None:
    (problem,) = problems(write(tmp_path, "please fix"))
    assert problem.field == "follow_up" and "mapping" in problem.message
