"""The fake GitHub's conversation side over real HTTP: what it answers, and what it refuses like GitHub."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.fake_github import FakeGitHub

TOKEN = "threads-token"
REPO = "octo/widgets"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos=(REPO,)) as server:
        server.open_pull(REPO, "conveyor/T-1")
        yield server


def call(fake: FakeGitHub, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> requests.Response:
    return requests.request(method, f"{fake.api_url}/repos/{REPO}{path}", json=body, timeout=10,
                            headers={"Authorization": f"token {TOKEN}", **(headers or {})}, allow_redirects=True)


def test_comments_reviews_and_replies_round_trip(fake: FakeGitHub) -> None:
    said = fake.threads.comment(1, "alice", "please rename it")
    review = fake.threads.review(1, "bob", "CHANGES_REQUESTED", "two things",
                                 comments=[("app.py", 3, "off by one")])
    listed = call(fake, "GET", "/issues/1/comments").json()
    assert [(c["id"], c["user"]["login"], c["body"]) for c in listed] == [(said.id, "alice", "please rename it")]
    reviews = call(fake, "GET", "/pulls/1/reviews").json()
    assert [(r["id"], r["state"], r["user"]["login"]) for r in reviews] == [(review.id, "CHANGES_REQUESTED", "bob")]
    line = call(fake, "GET", "/pulls/1/comments").json()[0]
    assert (line["path"], line["line"], line["pull_request_review_id"]) == ("app.py", 3, review.id)

    reply = call(fake, "POST", f"/pulls/1/comments/{line['id']}/replies", {"body": "fixed in abc123"})
    assert reply.status_code == 201 and reply.json()["in_reply_to_id"] == line["id"]
    assert reply.json()["user"]["login"] == fake.login
    again = call(fake, "POST", f"/pulls/1/comments/{reply.json()['id']}/replies", {"body": "and more"})
    assert again.json()["in_reply_to_id"] == line["id"]           # a reply to a reply joins the thread
    posted = call(fake, "POST", "/issues/1/comments", {"body": "done: see the new commit"})
    assert posted.status_code == 201 and fake.threads.comments(1, kind="issue")[-1].body == "done: see the new commit"


def test_it_refuses_what_github_refuses(fake: FakeGitHub) -> None:
    issue_comment = fake.threads.comment(1, "alice", "hi")
    assert call(fake, "POST", "/issues/1/comments", {"body": ""}).status_code == 422
    assert call(fake, "POST", "/issues/1/comments", {"body": "x" * 65537}).status_code == 422
    assert call(fake, "POST", "/issues/9/comments", {"body": "hi"}).status_code == 404
    assert call(fake, "POST", f"/pulls/1/comments/{issue_comment.id}/replies", {"body": "x"}).status_code == 404
    assert call(fake, "POST", "/pulls/1/reviews", {"event": "REQUEST_CHANGES", "body": "no"}).status_code == 422
    assert call(fake, "POST", "/pulls/1/reviews", {"event": "COMMENT"}).status_code == 422
    assert call(fake, "POST", f"/statuses/{'a' * 40}", {"state": "broken"}).status_code == 422
    assert call(fake, "GET", "/pulls/1/reviews", headers={"Authorization": "token wrong"}).status_code == 401


def test_etag_answers_304_and_costs_no_rate_limit(fake: FakeGitHub) -> None:
    first = call(fake, "GET", "/issues/1/comments")
    etag = first.headers["ETag"]
    used = fake.rate_used
    unchanged = call(fake, "GET", "/issues/1/comments", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and fake.rate_used == used
    fake.threads.comment(1, "alice", "new")
    changed = call(fake, "GET", "/issues/1/comments", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag and fake.rate_used == used + 1


def test_check_runs_logs_and_statuses(fake: FakeGitHub) -> None:
    sha = fake.pull(1).head_sha
    run = fake.threads.check_run(sha, "tests", "failure", log="line 1\nFAILED test_x\n")
    fake.threads.status(sha, "ci/lint", "pending")
    fake.threads.status(sha, "ci/lint", "failure", "3 errors")
    runs = call(fake, "GET", f"/commits/{sha}/check-runs").json()
    assert runs["total_count"] == 1 and runs["check_runs"][0]["conclusion"] == "failure"
    logs = call(fake, "GET", f"/actions/jobs/{run.id}/logs")
    assert logs.status_code == 200 and logs.text.endswith("FAILED test_x\n")
    assert logs.history and logs.history[0].status_code == 302      # GitHub redirects to a download URL
    combined = call(fake, "GET", f"/commits/{sha}/status").json()
    assert combined["state"] == "failure" and [s["state"] for s in combined["statuses"]] == ["failure"]
    assert len(call(fake, "GET", f"/commits/{sha}/statuses").json()) == 2


def test_permission_merge_and_close(fake: FakeGitHub) -> None:
    fake.threads.set_permission("alice", "write")
    assert call(fake, "GET", "/collaborators/alice/permission").json()["permission"] == "write"
    assert call(fake, "GET", "/collaborators/mallory/permission").json()["permission"] == "read"
    assert call(fake, "PUT", "/pulls/1/merge", {"sha": "f" * 40}).status_code == 409
    assert call(fake, "PUT", "/pulls/1/merge", {}).json()["merged"] is True
    assert call(fake, "PUT", "/pulls/1/merge", {}).status_code == 405          # no longer open
    fake.open_pull(REPO, "conveyor/T-2")
    closed = call(fake, "PATCH", "/pulls/2", {"state": "closed"}).json()
    assert closed["state"] == "closed" and closed["merged"] is False
