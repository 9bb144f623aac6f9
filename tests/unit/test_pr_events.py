"""The PR watcher's rules over GitHub's JSON: which items are requests, how a review carries its line comments,
where an answer goes, which checks count as failing, how text is bounded, and the follow-up file's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conveyor.core.task import validate_document
from conveyor.pipeline import pr_events
from conveyor.pipeline.pr_events import Original

SHA = "a" * 40


def user(login: str, kind: str = "User") -> dict[str, Any]:
    return {"login": login, "type": kind}


def review(review_id: int, state: str, body: str = "", login: str = "alice") -> dict[str, Any]:
    return {"id": review_id, "state": state, "body": body, "user": user(login), "html_url": f"u/r{review_id}"}


def line(comment_id: int, body: str, *, review_id: int | None = None, reply_to: int | None = None) -> dict[str, Any]:
    item = {"id": comment_id, "body": body, "path": "app.py", "line": 3, "user": user("alice"),
            "pull_request_review_id": review_id, "html_url": f"u/rc{comment_id}"}
    if reply_to is not None:
        item["in_reply_to_id"] = reply_to
    return item


def test_only_requesting_or_worded_reviews_carry_their_line_comments() -> None:
    reviews = [review(1, "CHANGES_REQUESTED"), review(2, "COMMENTED", "words"), review(3, "COMMENTED", "  "),
               review(4, "APPROVED", "LGTM"), review(5, "DISMISSED", "old")]
    assert set(pr_events.folding_reviews(reviews)) == {1, 2}
    comments = [line(10, "fix", review_id=1), line(11, "nit", review_id=3), line(12, "reply", review_id=4,
                                                                             reply_to=11)]
    (first, second) = pr_events.review_events(reviews, comments)
    assert (first.event_id, first.folds, first.reply_kind, first.reply_id) == ("r1", ("rc10",), "review", 1)
    assert first.body == "On app.py line 3 (review comment 10):\nfix"
    assert (second.event_id, second.body, second.folds) == ("r2", "words", ())
    alone = pr_events.comment_events(comments, {1, 2})
    assert [(e.event_id, e.reply_kind, e.reply_id) for e in alone] == [
        ("rc11", "review_comment", 11), ("rc12", "review_comment", 11)]     # a reply answers in its thread's root


def test_a_silent_review_with_several_line_comments_is_one_request() -> None:
    reviews = [review(1, "COMMENTED"), review(2, "COMMENTED")]
    comments = [line(10, "a", review_id=1), line(11, "b", review_id=1), line(12, "lone", review_id=2)]
    assert set(pr_events.folding_reviews(reviews, comments)) == {1}
    (batch,) = pr_events.review_events(reviews, comments)
    assert (batch.event_id, batch.folds) == ("r1", ("rc10", "rc11"))
    assert [e.event_id for e in pr_events.comment_events(comments, {1})] == ["rc12"]


def test_issue_comments_and_bots() -> None:
    (event,) = pr_events.issue_events([{"id": 7, "body": "hi", "user": user("dependabot[bot]", "Bot")},
                                        {"id": "x", "body": "no id"}, {"body": "none"}])
    assert (event.event_id, event.login, event.is_bot, event.reply_kind) == ("c7", "dependabot[bot]", True,
                                                                             "issue_comment")


def test_failing_checks_and_statuses_in_a_stable_order() -> None:
    runs = [{"id": 3, "name": "b", "status": "completed", "conclusion": "failure", "app": {"slug": "github-actions"},
             "output": {"title": "2 failed", "summary": "see log"}},
            {"id": 4, "name": "a", "status": "completed", "conclusion": "timed_out", "app": {"slug": "other-ci"}},
            {"id": 5, "name": "c", "status": "in_progress", "conclusion": None},
            {"id": 6, "name": "d", "status": "completed", "conclusion": "success"},
            {"id": 7, "name": "e", "status": "completed", "conclusion": "neutral"}]
    combined = {"statuses": [{"id": 9, "context": "ext", "state": "error", "description": "boom"},
                             {"id": 8, "context": "ok", "state": "success"}, {"id": 10, "state": "pending"}]}
    found = pr_events.ci_failures(runs, combined)
    assert [(f.event_id, f.name, f.job_id) for f in found] == [("ck4", "a", None), ("ck3", "b", 3),
                                                                ("st9", "ext", None)]
    assert found[1].detail == "2 failed\nsee log"
    assert pr_events.ci_failures([], None) == []


def test_text_is_kept_verbatim_until_the_bound_then_cut_with_a_pointer() -> None:
    assert pr_events.bound("short", 100, "url") == "short"
    cut = pr_events.bound("x" * 500, 200, "https://x/c1")
    assert cut.startswith("x" * 200) and "300 more characters cut" in cut and cut.endswith("https://x/c1]")
    assert pr_events.tail("abcdef", 3).endswith("def") and "3 characters cut" in pr_events.tail("abcdef", 3)
    assert len(pr_events.bound("y" * 100_000, 10**9, "u")) < 32_000          # never past the task format's limit


@pytest.mark.parametrize("trigger, event_id, author, reply, round_no", [
    ("comment", "c12", "alice", ("issue_comment", 12), None),
    ("review", "r3", "bob", ("review", 3), None),
    ("review_comment", "rc4", "carol", ("review_comment", 4), None),
    ("check", "ck5", None, None, 2),
    ("check", "st6", None, None, 1),
])
def test_the_follow_up_document_passes_the_task_format(tmp_path: Path, trigger: str, event_id: str,
                                                       author: str | None, reply: tuple[str, int] | None,
                                                       round_no: int | None) -> None:
    original = Original("T-1", "backend-dev", "codex", 7, "https://github.example/o/r/pull/7")
    document = pr_events.follow_up_document(original, head_sha=SHA, trigger=trigger, event_id=event_id,
                                            request="do: it\n$(nothing)", author=author, reply_to=reply,
                                            round_no=round_no, created_at="2026-12-07T06:00:00Z", title="t")
    task = validate_document(tmp_path / f"T-1.fu-{event_id}.yaml", document, "")
    assert task.id == f"T-1.fu-{event_id}" and document["tool"] == "codex" and document["priority"] == "high"
    block = task.follow_up
    assert block is not None and (block.of, block.pr, block.branch, block.trigger) == ("T-1", 7, "conveyor/T-1",
                                                                                      trigger)
    assert block.request == "do: it\n$(nothing)" and block.round == round_no


def test_titles() -> None:
    event = pr_events.issue_events([{"id": 1, "body": "x", "user": user("alice")}])[0]
    assert pr_events.event_title(7, event) == "Follow-up on PR #7: comment by alice"
    failure = pr_events.CiFailure("ck1", "tests\x1b[31m\n(3.11)", None, "", "")
    assert pr_events.ci_title(7, failure) == "Follow-up on PR #7: CI tests (3.11) failed"
