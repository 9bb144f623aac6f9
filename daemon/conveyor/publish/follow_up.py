"""Publish a follow-up's commit: fast-forward its pull request's branch, then answer on the thread.

Never a force push, never the base branch, never a new pull request: the commit's parent is the PR head the
workspace started from, and `git push <sha>:refs/heads/conveyor/<of>` without `+` lets the remote refuse
anything but a fast-forward, which is how a branch that moved meanwhile is noticed. The PR is asked again
right before the push: closed or merged meanwhile, nothing is pushed. Every step is idempotent (pushing the
same commit again is a no-op, the answer is looked for by its marker before it is posted), so start-up
recovery and the publication retry can run it again after a crash or an outage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from conveyor.config import Config
from conveyor.core.errors import GitError
from conveyor.core.follow_up import FollowUp
from conveyor.core.printable import printable
from conveyor.publish.flow import destination, why_no_pull_request
from conveyor.publish.github_types import REVIEW_LABELS, GitHubError, PullState
from conveyor.publish.pr_conversation import PullConversation
from conveyor.workspace import git

log = structlog.get_logger("conveyor.publish.follow_up")
SUMMARY_LIMIT = 1500
FILES_LIMIT = 30
_URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
Outcome = Literal["pushed", "not_open", "moved", "pending", "local", "fenced"]


def marker(task_id: str) -> str:
    """The hidden line that identifies a follow-up's answer on the thread (looked for before posting)."""
    return f"<!-- conveyor-follow-up: {task_id} -->"


@dataclass(frozen=True)
class PullInfo:
    """What a follow-up checks before it starts and again before it pushes."""

    number: int
    state: PullState
    title: str
    head_ref: str
    head_sha: str
    labels: tuple[str, ...] = ()


def _info(conversation: PullConversation, number: int) -> PullInfo:
    data = conversation.pull(number).data
    if not isinstance(data, Mapping):
        raise GitHubError(f"GitHub's answer for pull request #{number} is not an object", transient=True)
    merged = bool(data.get("merged") or data.get("merged_at"))
    state: PullState = "merged" if merged else ("open" if data.get("state") == "open" else "closed")
    head = data.get("head") if isinstance(data.get("head"), Mapping) else {}
    assert isinstance(head, Mapping)
    labels = tuple(str(label.get("name")) for label in data.get("labels") or [] if isinstance(label, Mapping))
    return PullInfo(number=number, state=state, title=str(data.get("title") or ""),
                    head_ref=str(head.get("ref") or ""), head_sha=str(head.get("sha") or ""), labels=labels)


@dataclass(frozen=True)
class FollowUpPublished:
    """What publishing a follow-up achieved; `message` becomes `result.publish`."""

    outcome: Outcome
    message: str
    reply_url: str | None = None
    pending: str | None = None      # "push" or "reply": what the periodic retry still owes
    state: str | None = None        # the PR's state when it was not open


def _thread(config: Config, env: Mapping[str, str]) -> PullConversation | str:
    """A client of the follow-up's repository, or why there is none (no remote, no token, no repository)."""
    settings = config.daemon
    where = destination(config.repo, settings)
    if where.remote is None:
        return f"a follow-up needs the pull request's remote: {where.why_local}"
    missing = why_no_pull_request(settings, env, where)
    if missing is not None or where.github_repo is None:
        return f"a follow-up needs GitHub: {missing}"
    prs = settings.pull_requests
    return PullConversation.connect(prs.api_url, env[prs.token_env].strip(), where.github_repo,
                                    token_source=f"${prs.token_env}")


def pull_info(config: Config, env: Mapping[str, str], follow_up: FollowUp) -> PullInfo | str:
    """The PR's state, title and head, or why it cannot be asked (a setting); GitHubError when GitHub fails."""
    thread = _thread(config, env)
    if isinstance(thread, str):
        return thread
    with thread:
        return _info(thread, follow_up.pr)


def publish_follow_up(config: Config, env: Mapping[str, str], task_id: str, follow_up: FollowUp, *, sha: str,
                      summary: str, files: Sequence[str], review: str | None = None,
                      labels: Sequence[str] = (), still_mine: Callable[[], bool] | None = None,
                      answered_before: bool = True) -> FollowUpPublished:
    """Push `sha` onto the PR's branch (fast-forward only) and answer on the thread; never raises for either.

    `labels` (the review's `unreviewed` / `changes-requested`) go on the PR: the PR exists already, so work
    nobody approved is marked on it rather than opened as a draft; when a review ran (`review` given), a
    review label it did not ask for comes off, as it described an earlier head (an approved follow-up
    clears `unreviewed`). In a fleet (`still_mine` given) the lease's
    fence is compared just before the push: a node whose lease passed on pushes and answers nothing.
    `answered_before` False (the run that just made the commit: nothing of it can be on the thread yet)
    skips the search for an earlier answer, two list requests of rate limit per follow-up."""
    bound = log.bind(task_id=task_id, pr=follow_up.pr, branch=follow_up.branch, commit=sha)
    thread = _thread(config, env)
    if isinstance(thread, str):
        return FollowUpPublished("local", f"not pushed: {thread}; the commit stays on the local branch")
    remote = config.daemon.remote.name
    assert remote is not None
    with thread:
        try:
            info = _info(thread, follow_up.pr)
        except GitHubError as exc:
            bound.error("follow_up.pull_unreadable", error=str(exc))
            return FollowUpPublished("pending", f"not pushed: the pull request could not be read: {exc}",
                                     pending="push")
        if info.state != "open":
            bound.info("follow_up.pull_not_open", state=info.state)
            return FollowUpPublished("not_open", f"not pushed: pull request #{follow_up.pr} was {info.state} "
                                     "while the follow-up ran", state=info.state)
        if still_mine is not None and not still_mine():
            bound.warning("follow_up.fenced", note="the lease passed to another node: nothing pushed")
            return FollowUpPublished("fenced", "not pushed: the lease passed to another node")
        pushed = _push(config, remote, sha, follow_up, bound)
        if pushed is not None:
            return pushed
        _move_local_branch(config, follow_up.branch, sha)
        said = f"pushed {sha[:12]} to '{follow_up.branch}' on '{remote}' (pull request #{follow_up.pr})"
        body = reply_body(task_id, follow_up, sha=sha, files=files, summary=summary, review=review)
        _label(thread, follow_up.pr, labels, bound)
        if review is not None:
            stale = [name for name in REVIEW_LABELS if name in info.labels and name not in labels]
            _unlabel(thread, follow_up.pr, _put_on_by_us(thread, follow_up.pr, stale, bound), bound)
        try:
            url = _answer(thread, task_id, follow_up, body, search=answered_before)
        except GitHubError as exc:
            bound.error("follow_up.reply_failed", error=str(exc), transient=exc.transient)
            return FollowUpPublished("pending", f"{said}; the answer on the pull request could not be posted "
                                     f"({exc}); tried again later", pending="reply")
    bound.info("follow_up.published", reply=url)
    return FollowUpPublished("pushed", f"{said}; answered on the pull request", reply_url=url)


def _push(config: Config, remote: str, sha: str, follow_up: FollowUp, bound: structlog.BoundLogger) \
        -> FollowUpPublished | None:
    try:
        git.push_fast_forward(config.repo, remote, sha, follow_up.branch, base=config.daemon.base_branch)
    except git.BranchMoved as exc:
        if _already_there(config, remote, sha, follow_up.branch):   # pushed before a restart, built on since
            return None
        bound.warning("follow_up.branch_moved", error=_scrub(str(exc)))
        return FollowUpPublished("moved", f"not pushed: '{follow_up.branch}' on '{remote}' moved while the "
                                 "follow-up ran (someone pushed to it)")
    except GitError as exc:
        reason = _scrub(str(exc))
        bound.error("follow_up.push_failed", error=reason)
        return FollowUpPublished("pending", f"not pushed to '{remote}' ({reason}); tried again later",
                                 pending="push")
    return None


def _label(thread: PullConversation, number: int, labels: Sequence[str], bound: structlog.BoundLogger) -> None:
    for label in labels:
        try:
            thread.add_label(number, label)
        except GitHubError as exc:   # a label is a courtesy: the answer says the same in words
            bound.warning("follow_up.label_failed", label=label, error=str(exc))


def _put_on_by_us(thread: PullConversation, number: int, labels: Sequence[str],
                  bound: structlog.BoundLogger) -> list[str]:
    """Those of `labels` whose latest `labeled` event is the daemon's own (its token's login): a person's
    `changes-requested` looks the same by name and is theirs to take off. In doubt (GitHub does not
    answer), none."""
    if not labels:
        return []
    try:
        me = thread.me().data
        events = thread.issue_events(number).data or []
    except GitHubError as exc:
        bound.warning("follow_up.label_events_unreadable", error=str(exc), note="review labels left as they are")
        return []
    login = me.get("login") if isinstance(me, Mapping) else None
    by: dict[str, object] = {}
    for event in events:
        if isinstance(event, Mapping) and event.get("event") == "labeled" and isinstance(event.get("label"), Mapping):
            actor = event.get("actor")
            by[str(event["label"].get("name"))] = actor.get("login") if isinstance(actor, Mapping) else None
    ours = [name for name in labels if login is not None and by.get(name) == login]
    for name in set(labels) - set(ours):
        bound.info("follow_up.label_kept", label=name, note="put on by someone else")
    return ours


def _unlabel(thread: PullConversation, number: int, labels: Sequence[str], bound: structlog.BoundLogger) -> None:
    for label in labels:
        try:
            thread.remove_label(number, label)
        except GitHubError as exc:   # as with adding: the answer on the thread says what the review found
            bound.warning("follow_up.unlabel_failed", label=label, error=str(exc))
        else:
            bound.info("follow_up.unlabelled", label=label)


def _already_there(config: Config, remote: str, sha: str, branch: str) -> bool:
    """Whether the remote branch already holds `sha` (a push before a crash, then someone pushed on top)."""
    try:
        head = git.fetch_branch(config.repo, remote, branch)
        if head is None:
            return False
        git.run(config.repo, "merge-base", "--is-ancestor", sha, head)
    except GitError:
        return False
    return True


def _move_local_branch(config: Config, branch: str, sha: str) -> None:
    """The local copy of the PR's branch follows what was pushed (best effort: the remote is the truth)."""
    try:
        git.run(config.repo, "update-ref", "-m", "conveyor: follow-up pushed", f"refs/heads/{branch}", sha)
    except GitError as exc:
        log.warning("follow_up.local_branch_not_moved", branch=branch, error=str(exc))


def _answer(thread: PullConversation, task_id: str, follow_up: FollowUp, body: str, *, search: bool) -> str:
    """The answer's address: found by its marker (posted before a restart), else posted now."""
    number, hidden = follow_up.pr, marker(task_id)
    lists = ((thread.issue_comments(number), "issuecomment-"),
             (thread.review_comments(number), "discussion_r")) if search else ()
    for listed, anchor in lists:
        for item in listed.data if isinstance(listed.data, list) else []:
            if isinstance(item, Mapping) and hidden in str(item.get("body") or ""):
                return str(item.get("html_url") or _address(follow_up, anchor, item.get("id")))
    reply_to = follow_up.reply_to
    if reply_to is not None and reply_to.kind == "review_comment":
        return _address(follow_up, "discussion_r", thread.reply(number, reply_to.id, body))
    return _address(follow_up, "issuecomment-", thread.comment(number, body))


def _address(follow_up: FollowUp, anchor: str, comment_id: object) -> str:
    return f"{follow_up.pr_url or ''}#{anchor}{comment_id}"


def reply_body(task_id: str, follow_up: FollowUp, *, sha: str, files: Sequence[str], summary: str,
               review: str | None) -> str:
    """The answer: the commit, the files, the agent's own summary (bounded, quoted, mentions defused)."""
    if follow_up.is_check:
        opening = f"Pushed {sha} to `{follow_up.branch}` to fix the failing check."
    else:
        opening = f"Pushed {sha} to `{follow_up.branch}` in answer to @{follow_up.author}."
    shown = [f"- `{_inline(path)}`" for path in files[:FILES_LIMIT]]
    if len(files) > FILES_LIMIT:
        shown.append(f"- … and {len(files) - FILES_LIMIT} more")
    text = printable(summary).strip()[:SUMMARY_LIMIT] or "(the agent gave no summary)"
    quoted = "\n".join(f"> {_defuse(line)}" if line.strip() else ">" for line in text.splitlines())
    checks = "The completion gate and verify passed again" + (f"; review: {review}" if review else "") + "."
    return "\n".join([marker(task_id), opening, "", f"**Files changed ({len(files)})**", *shown, "",
                      "**What the agent says it changed**", quoted, "", f"_{checks} Conveyor follow-up "
                      f"`{task_id}`._", ""])


def _defuse(line: str) -> str:
    """An agent's words must not ping people or close issues: `@name` and `#123` lose their link."""
    return line.replace("@", "@\u200b").replace("#", "#\u200b")


def _inline(path: str) -> str:
    return printable(path).replace("`", "'")[:200]


def _scrub(text: str) -> str:
    return _URL_CREDENTIALS.sub(r"\1***@", text)
