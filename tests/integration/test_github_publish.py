"""The GitHub publisher against FakeGitHub, a real HTTP server on 127.0.0.1 speaking the REST subset used."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from github import Auth, Github, GithubException

from conveyor.publish.github import (
    GitHubAuthError,
    GitHubError,
    GitHubNotFoundError,
    GitHubPublisher,
    GitHubUnavailableError,
    GitHubValidationError,
    PullRequestRef,
    repo_from_remote_url,
)
from tests.conftest import git
from tests.support.fake_github import FakeGitHub

REPO = "octo/widgets"
TOKEN = "ghs_fakeTokenForTests0123456789abcdefXYZ"
WRONG_TOKEN = "ghs_wrongTokenNeverShown9876543210zyxw"


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos=(REPO, "octo/other")) as server:
        yield server


def publisher_for(fake: FakeGitHub, *, token: str = TOKEN, repo: str = REPO, timeout_s: int = 10,
                  api_url: str | None = None) -> GitHubPublisher:
    return GitHubPublisher(api_url or fake.api_url, token, repo, timeout_s, seconds_between_writes=None)


@pytest.fixture
def publisher(fake: FakeGitHub) -> Iterator[GitHubPublisher]:
    with publisher_for(fake) as client:
        yield client


def ensure(publisher: GitHubPublisher, head: str = "conveyor/task-1", *, labels: tuple[str, ...] = ("conveyor",),
           draft: bool = False, title: str = "feat(backend-dev): add widgets") -> PullRequestRef:
    return publisher.ensure_pull_request(head=head, base="main", title=title, body="Task: add widgets\n\nCost: $0.12",
                                         labels=labels, draft=draft)


def writes(fake: FakeGitHub) -> list[str]:
    return [r.path for r in fake.requests if r.method != "GET"]


# -- creating and finding ---------------------------------------------------------------------------


def test_creates_a_pull_request_with_title_body_labels_and_draft(fake: FakeGitHub,
                                                                 publisher: GitHubPublisher) -> None:
    ref = ensure(publisher, labels=("conveyor", "partial"), draft=True)

    assert ref == PullRequestRef(number=1, url=f"{fake.web_url}/{REPO}/pull/1", created=True, state="open",
                                 draft=True)
    (pull,) = fake.pulls_for(REPO, "conveyor/task-1")
    assert pull.title == "feat(backend-dev): add widgets"
    assert pull.body == "Task: add widgets\n\nCost: $0.12"
    assert pull.labels == ("conveyor", "partial")
    assert pull.draft is True
    assert pull.base == "main"
    (create,) = fake.requests_to("POST", rf"/repos/{REPO}/pulls")
    assert create.json == {"base": "main", "head": "conveyor/task-1", "title": "feat(backend-dev): add widgets",
                           "body": "Task: add widgets\n\nCost: $0.12", "draft": True}
    assert all(r.authorized for r in fake.requests)


def test_a_rerun_returns_the_same_pull_request_without_writing(fake: FakeGitHub,
                                                               publisher: GitHubPublisher) -> None:
    first = ensure(publisher)
    writes_after_first = writes(fake)

    second = ensure(publisher)
    with publisher_for(fake) as fresh_process:  # a restarted daemon has no memory of the first run
        third = ensure(fresh_process)

    assert (second.number, second.url, second.created) == (first.number, first.url, False)
    assert (third.number, third.created) == (first.number, False)
    assert writes(fake) == writes_after_first
    assert len(fake.pulls_for(REPO, "conveyor/task-1")) == 1


def test_a_rerun_adds_only_the_missing_labels(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    ensure(publisher, labels=("conveyor",))
    ensure(publisher, labels=("conveyor", "partial", "partial"))

    label_posts = fake.requests_to("POST", rf"/repos/{REPO}/issues/1/labels")
    assert [r.json for r in label_posts] == [["conveyor"], ["partial"]]
    assert fake.pull(1, REPO).labels == ("conveyor", "partial")


def test_no_labels_means_no_label_request(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    ensure(publisher, labels=())
    assert fake.requests_to("POST", r".*/labels") == []


def test_lookup_is_by_branch_so_other_branches_get_their_own(fake: FakeGitHub,
                                                             publisher: GitHubPublisher) -> None:
    one = ensure(publisher, "conveyor/task-1")
    two = ensure(publisher, "conveyor/task-2")
    assert (one.number, two.number) == (1, 2)
    (listing, *_) = fake.requests_to("GET", rf"/repos/{REPO}/pulls")
    assert listing.query == {"state": "all", "head": "octo:conveyor/task-1", "per_page": "100"}


def test_an_open_pull_request_wins_over_closed_ones(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    ensure(publisher)
    fake.close(1, REPO)
    reopened = fake.open_pull(REPO, "conveyor/task-1", "main")

    ref = ensure(publisher)

    assert (ref.number, ref.state, ref.created) == (reopened.number, "open", False)


def test_a_closed_pull_request_is_returned_not_duplicated(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    ensure(publisher)
    fake.close(1, REPO)

    ref = ensure(publisher)

    assert (ref.number, ref.state, ref.created) == (1, "closed", False)
    assert len(fake.pulls_for(REPO, "conveyor/task-1")) == 1


def test_losing_a_creation_race_returns_the_winner(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    fake.run_before_next(lambda: fake.open_pull(REPO, "conveyor/task-1", "main", title="other run"),
                         method="POST", path_contains="/pulls")

    ref = ensure(publisher)

    assert (ref.number, ref.created) == (1, False)
    assert len(fake.pulls_for(REPO, "conveyor/task-1")) == 1
    assert len(fake.requests_to("POST", rf"/repos/{REPO}/pulls")) == 1


def test_an_already_exists_answer_with_nothing_to_find_is_an_error(fake: FakeGitHub,
                                                                   publisher: GitHubPublisher) -> None:
    fake.fail_next(422, method="POST", message="A pull request already exists for octo:conveyor/task-1.")
    with pytest.raises(GitHubValidationError, match=r"already exists .* cannot be found"):
        ensure(publisher)


def test_drafts_fall_back_to_a_normal_pull_request_where_unsupported() -> None:
    with FakeGitHub(token=TOKEN, repos=(REPO,), drafts_supported=False) as fake, publisher_for(fake) as client:
        ref = ensure(client, draft=True)

        assert (ref.created, ref.draft) == (True, False)
        assert [r.json["draft"] for r in fake.requests_to("POST", rf"/repos/{REPO}/pulls")] == [True, False]


def test_a_label_failure_keeps_the_pull_request_and_a_rerun_catches_up(
    fake: FakeGitHub, publisher: GitHubPublisher
) -> None:
    fake.fail_next(500, method="POST", path_contains="/labels")

    ref = ensure(publisher, labels=("conveyor",))
    assert ref.created is True
    assert fake.pull(1, REPO).labels == ()

    ensure(publisher, labels=("conveyor",))
    assert fake.pull(1, REPO).labels == ("conveyor",)


def test_enterprise_base_url_with_api_prefix() -> None:
    with FakeGitHub(token=TOKEN, repos=(REPO,), path_prefix="/api/v3") as fake, publisher_for(fake) as client:
        assert fake.api_url.endswith("/api/v3")
        ref = ensure(client)
        assert ensure(client).number == ref.number == 1
        assert client.state_of("conveyor/task-1") == "open"


def test_the_fake_pages_long_lists_like_github(fake: FakeGitHub) -> None:
    for _ in range(5):
        fake.open_pull(REPO, "busy", "main")
    client = Github(base_url=fake.api_url, auth=Auth.Token(TOKEN), per_page=2, retry=None,
                    seconds_between_requests=None)
    try:
        numbers = [pull.number for pull in client.get_repo(REPO).get_pulls(state="all", head="octo:busy")]
    finally:
        client.close()
    assert numbers == [5, 4, 3, 2, 1]
    assert [r.query.get("page", "1") for r in fake.requests_to("GET", rf"/repos/{REPO}/pulls")] == ["1", "2", "3"]


# -- state ------------------------------------------------------------------------------------------


def test_state_follows_the_pull_request(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    assert publisher.state_of("conveyor/task-1") is None
    ensure(publisher, "conveyor/task-1")
    ensure(publisher, "conveyor/task-2")
    assert publisher.state_of("conveyor/task-1") == "open"

    fake.merge(1, REPO)
    fake.close(2, REPO)

    assert publisher.state_of("conveyor/task-1") == "merged"
    assert publisher.state_of("conveyor/task-2") == "closed"
    assert ensure(publisher, "conveyor/task-1").state == "merged"


# -- a real pushed branch -------------------------------------------------------------------------


def test_with_a_real_bare_remote_the_branch_must_be_pushed_first(git_repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(git_repo, "remote", "add", "origin", str(bare))
    git(git_repo, "push", "-q", "origin", "main")
    git(git_repo, "switch", "-q", "-c", "conveyor/task-7")
    (git_repo / "widget.py").write_text("WIDGET = 1\n")
    git(git_repo, "add", "widget.py")
    git(git_repo, "commit", "-q", "-m", "feat: widget")

    with FakeGitHub(token=TOKEN, repos=(REPO,), remotes={REPO: bare}) as fake, publisher_for(fake) as client:
        with pytest.raises(GitHubValidationError, match="push branch conveyor/task-7 to the remote first"):
            ensure(client, "conveyor/task-7")

        git(git_repo, "push", "-q", "origin", "conveyor/task-7")
        ref = ensure(client, "conveyor/task-7")

        assert ref.created is True
        assert fake.pull(ref.number).head_sha == git(git_repo, "rev-parse", "HEAD")


# -- errors -----------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_rejected_token_names_the_variable_not_the_token(fake: FakeGitHub) -> None:
    with publisher_for(fake, token=WRONG_TOKEN) as client, pytest.raises(GitHubAuthError) as caught:
        ensure(client)
    message = str(caught.value)
    assert "the token in $GITHUB_TOKEN was rejected" in message
    assert "401" in message
    assert WRONG_TOKEN not in message


def test_a_missing_token_is_refused_before_any_request(fake: FakeGitHub) -> None:
    with pytest.raises(GitHubAuthError, match=r"\$GITHUB_TOKEN is empty or unset"):
        publisher_for(fake, token=" ")
    assert fake.requests == []


def test_an_unknown_repository_is_a_not_found_error(fake: FakeGitHub) -> None:
    with publisher_for(fake, repo="octo/missing") as client, pytest.raises(GitHubNotFoundError) as caught:
        ensure(client)
    assert "repository octo/missing was not found" in str(caught.value)


def test_a_persistent_server_error_is_transient_after_a_few_read_retries(fake: FakeGitHub,
                                                                         publisher: GitHubPublisher) -> None:
    fake.fail_next(500, count=10)
    with pytest.raises(GitHubUnavailableError) as caught:
        ensure(publisher)
    assert caught.value.transient is True
    assert "failed with 500" in str(caught.value)
    assert len(fake.requests) == 3  # one read and two retries, then give up: no storm


def test_a_single_server_error_on_a_read_is_retried(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    fake.fail_next(502, method="GET")
    assert ensure(publisher).created is True


def test_a_server_error_on_create_is_not_retried(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    fake.fail_next(500, method="POST")
    with pytest.raises(GitHubUnavailableError):
        ensure(publisher)
    assert len(fake.requests_to("POST", rf"/repos/{REPO}/pulls")) == 1


def test_a_refused_connection_says_github_could_not_be_reached(fake: FakeGitHub) -> None:
    api_url = f"http://127.0.0.1:{_closed_port()}"
    with publisher_for(fake, api_url=api_url) as client, pytest.raises(GitHubUnavailableError) as caught:
        ensure(client)
    assert f"could not reach GitHub at {api_url}" in str(caught.value)
    assert "Connection refused" in str(caught.value)


def test_a_server_that_does_not_answer_times_out(fake: FakeGitHub) -> None:
    fake.stall_next(5.0)
    with publisher_for(fake, timeout_s=1) as client, pytest.raises(GitHubUnavailableError, match="within 1s"):
        ensure(client)


def test_rate_limits_are_transient_and_other_403s_are_permission_problems(
    fake: FakeGitHub, publisher: GitHubPublisher
) -> None:
    fake.fail_next(403, message="API rate limit exceeded for installation ID 1.")
    with pytest.raises(GitHubUnavailableError, match="rate-limited") as limited:
        ensure(publisher)
    assert limited.value.transient is True

    fake.fail_next(403)
    with pytest.raises(GitHubAuthError, match="needs write access to pull requests"):
        ensure(publisher)


def test_other_validation_errors_carry_githubs_explanation(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    fake.fail_next(422, method="POST", message="No commits between main and conveyor/task-1")
    with pytest.raises(GitHubValidationError, match="has no commits that main lacks"):
        ensure(publisher)


def test_an_unexpected_status_is_still_a_sentence(fake: FakeGitHub, publisher: GitHubPublisher) -> None:
    fake.fail_next(418, message="I'm a teapot")
    with pytest.raises(GitHubError, match=r"refused looking up pull requests from conveyor/task-1 \(418"):
        ensure(publisher)


@pytest.mark.parametrize("status", [401, 403, 404, 422, 500])
def test_no_error_or_log_line_ever_contains_the_token(
    status: int, fake: FakeGitHub, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Even a server (or proxy) that echoes the token back must not get it into our messages."""
    caplog.set_level(logging.DEBUG)
    fake.fail_next(status, count=10, message=f"upstream rejected Authorization: token {TOKEN}")
    with publisher_for(fake) as client, pytest.raises(GitHubError) as caught:
        ensure(client)
    shown = "\n".join([str(caught.value), repr(caught.value), repr(caught.value.args), repr(client),
                       capsys.readouterr().out, caplog.text])
    assert TOKEN not in shown
    assert caught.value.__cause__ is None


def test_bad_settings_are_refused_with_a_sentence(fake: FakeGitHub) -> None:
    with pytest.raises(GitHubError, match="not an http"):
        GitHubPublisher("api.github.com", TOKEN, REPO)
    with pytest.raises(GitHubError, match="owner/name"):
        GitHubPublisher(fake.api_url, TOKEN, "just-a-name")


# -- remote URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("git@github.com:octo/widgets.git", "octo/widgets"),
    ("git@github.com:octo/widgets", "octo/widgets"),
    ("https://github.com/octo/widgets", "octo/widgets"),
    ("https://github.com/octo/widgets.git", "octo/widgets"),
    ("https://github.com/octo/widgets/", "octo/widgets"),
    ("https://x-access-token:secret@github.com/octo/widgets.git", "octo/widgets"),
    ("ssh://git@github.com/octo/widgets.git", "octo/widgets"),
    ("ssh://git@ghe.example.com:2222/team/my.repo.git", "team/my.repo"),
    ("git@ghe.corp.example:platform/conveyor.git", "platform/conveyor"),
    ("https://ghe.corp.example/platform/conveyor", "platform/conveyor"),
    ("  https://github.com/octo/widgets.git\n", "octo/widgets"),
    ("/srv/git/widgets.git", None),
    ("file:///srv/git/widgets.git", None),
    ("../widgets.git", None),
    ("https://gitlab.com/group/sub/project.git", None),
    ("https://github.com/octo", None),
    ("git@github.com:/octo/widgets.git", None),
    ("https://github.com/../widgets", None),
    ("", None),
])
def test_repo_from_remote_url(url: str, expected: str | None) -> None:
    assert repo_from_remote_url(url) == expected


# -- the fake itself (the routes the publisher does not use are there for other tests) --------------


def test_the_fake_serves_single_reads_like_github(fake: FakeGitHub) -> None:
    fake.open_pull(REPO, "feature", "main", title="by hand")
    client = Github(base_url=fake.api_url, auth=Auth.Token(TOKEN), retry=None, seconds_between_requests=None)
    try:
        repo = client.get_repo(REPO)
        pull = repo.get_pull(1)
        assert (repo.full_name, pull.title, pull.is_merged()) == (REPO, "by hand", False)
        pull.add_to_labels("x")
        fake.merge(1, REPO)
        assert repo.get_pull(1).is_merged() is True
        assert [label.name for label in repo.get_pull(1).get_labels()] == ["x"]
    finally:
        client.close()


def test_the_fake_records_unauthorized_requests_and_unknown_routes(fake: FakeGitHub) -> None:
    client = Github(base_url=fake.api_url, retry=None, seconds_between_requests=None)
    try:
        with pytest.raises(GithubException) as unauthorized:
            list(client.get_repo(REPO).get_pulls())
        assert unauthorized.value.status == 401
    finally:
        client.close()
    assert [r.authorized for r in fake.requests] == [False]
    with pytest.raises(ValueError, match="say which one"):
        fake.merge(1)


def test_a_failed_draft_fallback_is_a_validation_error() -> None:
    with FakeGitHub(token=TOKEN, repos=(REPO,), drafts_supported=False) as fake, publisher_for(fake) as client:
        fake.fail_next(422, method="POST", message="Draft pull requests are not supported in this repository.")
        fake.fail_next(422, method="POST", message="head sha can't be blank")
        with pytest.raises(GitHubValidationError, match="head sha can't be blank"):
            ensure(client, draft=True)
