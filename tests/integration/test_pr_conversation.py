"""PullConversation (the PR watcher's and the runner's API calls) against FakeGitHub over real HTTP:
conditional reads, replies, comments, labels, permissions, log tails; failures as sentences without the token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conveyor.publish.github_types import GitHubAuthError, GitHubError, GitHubUnavailableError
from conveyor.publish.pr_conversation import MAX_BODY, PullConversation
from tests.support.fake_github import FakeGitHub

TOKEN = "ghs_conversationToken0123456789abcdef"
REPO = "octo/widgets"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos=(REPO,), path_prefix="/api/v3") as server:   # GitHub Enterprise style
        server.open_pull(REPO, "conveyor/T-1")
        yield server


@pytest.fixture
def client(fake: FakeGitHub) -> Iterator[PullConversation]:
    with PullConversation.connect(fake.api_url, TOKEN, REPO, token_source="$GH", seconds_between_writes=None) as c:
        yield c


def test_a_conditional_read_answers_unchanged_for_free_until_something_changes(fake: FakeGitHub,
                                                                               client: PullConversation) -> None:
    fake.threads.comment(1, "alice", "first")
    first = client.issue_comments(1)
    assert first.changed and [c["body"] for c in first.data] == ["first"] and first.etag
    used = fake.rate_used
    same = client.issue_comments(1, first.etag)
    assert (same.changed, same.data, same.etag) == (False, None, first.etag)
    assert fake.rate_used == used                                        # a 304 costs no rate limit
    fake.threads.comment(1, "bob", "second")
    changed = client.issue_comments(1, first.etag)
    assert changed.changed and len(changed.data) == 2 and changed.etag != first.etag
    pull = client.pull(1)
    assert client.pull(1, pull.etag).changed is False
    assert client.me().data["login"] == fake.login


def test_lists_follow_every_page(fake: FakeGitHub, client: PullConversation) -> None:
    for n in range(230):
        fake.threads.comment(1, "alice", f"comment {n}")
    listed = client.issue_comments(1)
    assert [c["body"] for c in listed.data] == [f"comment {n}" for n in range(230)]
    assert client.issue_comments(1, listed.etag).changed is False


def test_reply_comment_label_permission_and_log_tail(fake: FakeGitHub, client: PullConversation) -> None:
    thread = fake.threads.review_comment(1, "alice", "rename this")
    reply_id = client.reply(1, thread.id, "renamed in abc123")
    (reply,) = [c for c in fake.threads.comments(1, kind="review") if c.id == reply_id]
    assert (reply.in_reply_to, reply.login, reply.body) == (thread.id, fake.login, "renamed in abc123")
    comment_id = client.comment(1, "x" * (MAX_BODY + 10))                    # cut to what GitHub takes
    (posted,) = [c for c in fake.threads.comments(1, kind="issue") if c.id == comment_id]
    assert len(posted.body) == MAX_BODY and posted.body.endswith("characters)")
    client.add_label(1, "needs-human")
    client.add_label(1, "unreviewed")
    assert fake.pull(1).labels == ("needs-human", "unreviewed")
    client.remove_label(1, "unreviewed")
    client.remove_label(1, "unreviewed")                                 # gone already: nothing to do
    assert fake.pull(1).labels == ("needs-human",)
    fake.fail_next(503, method="DELETE", count=5)
    with pytest.raises(GitHubUnavailableError):                           # other failures are the caller's
        client.remove_label(1, "needs-human")
    assert fake.pull(1).labels == ("needs-human",)
    fake.threads.set_permission("alice", "write")
    assert (client.permission("alice"), client.permission("bob"), client.permission("no_such!user")) == (
        "write", "read", "none")
    run = fake.threads.check_run(fake.pull(1).head_sha, "tests", log="".join(f"l{n}\n" for n in range(500)))
    assert client.log_tail(run.id, 3) == "l497\nl498\nl499"
    assert client.log_tail(999, 3) is None                                # no such job: no tail, no failure
    runs = client.check_runs(fake.pull(1).head_sha)
    assert [r["id"] for r in runs.data] == [run.id]
    assert client.check_runs(fake.pull(1).head_sha, runs.etag).changed is False


def test_failures_are_sentences_without_the_token(fake: FakeGitHub, client: PullConversation) -> None:
    with pytest.raises(GitHubError) as missing:
        client.reply(1, 424242, "hello")
    assert missing.value.status == 404
    fake.fail_next(500, method="POST", path_contains="/comments")
    with pytest.raises(GitHubUnavailableError) as down:
        client.comment(1, "hello")
    assert down.value.transient
    assert len(fake.requests_to("POST", rf"/repos/{REPO}/issues/1/comments")) == 1   # a POST is never retried
    fake.fail_next(401, message=f"Bad credentials for {TOKEN}")
    with pytest.raises(GitHubAuthError) as refused:
        client.issue_comments(1)
    for error in (missing.value, down.value, refused.value):
        assert TOKEN not in str(error)


def test_only_labels_the_daemon_put_on_count_as_its_own_and_in_doubt_none(fake: FakeGitHub,
                                                                          client: PullConversation) -> None:
    import structlog

    from conveyor.publish.follow_up import _put_on_by_us

    log = structlog.get_logger("test")
    client.add_label(1, "unreviewed")
    fake.label_as(1, "changes-requested", "alice")
    assert _put_on_by_us(client, 1, ["unreviewed", "changes-requested"], log) == ["unreviewed"]
    fake.fail_next(502, method="GET", path_contains="/events", count=5)
    assert _put_on_by_us(client, 1, ["unreviewed"], log) == []          # GitHub does not answer: keep them
    assert _put_on_by_us(client, 1, [], log) == []
