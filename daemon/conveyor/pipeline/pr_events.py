"""What happened on a pull request, as events the watcher can act on once, and the follow-up task each becomes.

Pure functions over GitHub's JSON (no network, no files), so every rule is testable on its own:

- a review that requests changes, a commented review with words, or one with several line comments is one
  event (`r<id>`) carrying its line comments; those comments are then part of it, not events of their own;
- any other review comment (a single line comment, a reply in a thread) is an event (`rc<id>`) answered in
  its thread; an issue comment on the conversation is an event (`c<id>`);
- approvals, dismissed and pending reviews are not requests;
- a failing check run (`ck<id>`) or commit status (`st<id>`) on the head is a CI event.

A person's words go into the task file as data (`follow_up.request`), verbatim up to a bound and never
near a shell; the title only carries a login (GitHub's own charset) or a check name made printable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.core.follow_up import LOGIN, MAX_REQUEST_CHARS, follow_up_id
from conveyor.core.printable import printable
from conveyor.core.state_files import task_branch
from conveyor.core.task import new_task_document

FOLDED_STATES = ("CHANGES_REQUESTED", "COMMENTED")
FAILED_CONCLUSIONS = ("failure", "timed_out")
FAILED_STATES = ("failure", "error")
CREATED_BY = "conveyor-pr-watch"


@dataclass(frozen=True)
class Event:
    """One request on the conversation: who, what, and where the answer goes."""

    event_id: str
    trigger: str                   # review | review_comment | comment
    login: str
    is_bot: bool
    body: str
    reply_kind: str                # issue_comment | review_comment | review
    reply_id: int
    url: str
    folds: tuple[str, ...] = ()    # event ids of the line comments this review carries


@dataclass(frozen=True)
class CiFailure:
    event_id: str                  # ck<check run id> or st<status id>
    name: str
    job_id: int | None             # an Actions job whose log can be read
    detail: str                    # what GitHub says about it (output title/summary, status description)
    url: str


def _login(item: Mapping[str, Any]) -> tuple[str, bool]:
    user = item.get("user") or item.get("creator")
    if not isinstance(user, Mapping):
        return "", False
    return str(user.get("login") or ""), str(user.get("type") or "") == "Bot"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def folding_reviews(reviews: Sequence[Mapping[str, Any]],
                    comments: Sequence[Mapping[str, Any]] = ()) -> dict[int, Mapping[str, Any]]:
    """Reviews that carry their line comments: changes requested, commented with words, or commented on
    several lines at once (one run for the batch, not one per line). A lone line comment (GitHub makes a
    review of each) stays a review comment, answered in its own thread."""
    lines: dict[Any, int] = {}
    for comment in comments:
        lines[comment.get("pull_request_review_id")] = lines.get(comment.get("pull_request_review_id"), 0) + 1
    found = {}
    for review in reviews:
        review_id, state = _int(review.get("id")), review.get("state")
        worded = bool(str(review.get("body") or "").strip())
        if review_id is not None and (state == "CHANGES_REQUESTED"
                                      or (state == "COMMENTED" and (worded or lines.get(review_id, 0) > 1))):
            found[review_id] = review
    return found


def review_events(reviews: Sequence[Mapping[str, Any]], comments: Sequence[Mapping[str, Any]]) -> list[Event]:
    events = []
    for review_id, review in folding_reviews(reviews, comments).items():
        login, bot = _login(review)
        mine = [c for c in comments if c.get("pull_request_review_id") == review_id and _int(c.get("id"))]
        parts = [str(review.get("body") or "").strip()] if str(review.get("body") or "").strip() else []
        for comment in mine:
            where = f"On {comment.get('path') or 'the diff'} line {comment.get('line') or '?'}"
            parts.append(f"{where} (review comment {comment['id']}):\n{comment.get('body') or ''}")
        events.append(Event(f"r{review_id}", "review", login, bot, "\n\n".join(parts), "review", review_id,
                            str(review.get("html_url") or ""), tuple(f"rc{c['id']}" for c in mine)))
    return events


def comment_events(comments: Sequence[Mapping[str, Any]], folding: set[int]) -> list[Event]:
    """Review comments not carried by a folding review; each is answered in its thread (its root)."""
    events = []
    for comment in comments:
        comment_id = _int(comment.get("id"))
        if comment_id is None or comment.get("pull_request_review_id") in folding:
            continue
        login, bot = _login(comment)
        root = _int(comment.get("in_reply_to_id")) or comment_id
        body = str(comment.get("body") or "")
        where = f"On {comment.get('path') or 'the diff'} line {comment.get('line') or '?'}:\n"
        events.append(Event(f"rc{comment_id}", "review_comment", login, bot, where + body, "review_comment", root,
                            str(comment.get("html_url") or "")))
    return events


def issue_events(comments: Sequence[Mapping[str, Any]]) -> list[Event]:
    events = []
    for comment in comments:
        comment_id = _int(comment.get("id"))
        if comment_id is None:
            continue
        login, bot = _login(comment)
        events.append(Event(f"c{comment_id}", "comment", login, bot, str(comment.get("body") or ""),
                            "issue_comment", comment_id, str(comment.get("html_url") or "")))
    return events


def ci_failures(check_runs: Sequence[Mapping[str, Any]], combined: Mapping[str, Any] | None) -> list[CiFailure]:
    """Failing check runs and statuses on a commit, in a stable order (by kind, then name)."""
    found = []
    for run in check_runs:
        run_id = _int(run.get("id"))
        if run_id is None or run.get("status") != "completed" or run.get("conclusion") not in FAILED_CONCLUSIONS:
            continue
        output = run.get("output") if isinstance(run.get("output"), Mapping) else {}
        assert isinstance(output, Mapping)
        app = run.get("app") if isinstance(run.get("app"), Mapping) else {}
        assert isinstance(app, Mapping)
        detail = "\n".join(str(output.get(key)) for key in ("title", "summary", "text") if output.get(key))
        found.append(CiFailure(f"ck{run_id}", str(run.get("name") or "check"),
                               run_id if app.get("slug") == "github-actions" else None, detail,
                               str(run.get("html_url") or run.get("details_url") or "")))
    statuses = combined.get("statuses") if isinstance(combined, Mapping) else None
    for status in statuses if isinstance(statuses, list) else []:
        status_id = _int(status.get("id")) if isinstance(status, Mapping) else None
        if status_id is None or status.get("state") not in FAILED_STATES:
            continue
        found.append(CiFailure(f"st{status_id}", str(status.get("context") or "status"), None,
                               str(status.get("description") or ""), str(status.get("target_url") or "")))
    return sorted(found, key=lambda failure: (failure.event_id[:2], failure.name, failure.event_id))


def bound(text: str, limit: int, url: str) -> str:
    """`text` verbatim when it fits; else its start and a note of how much was cut and where the rest is."""
    limit = min(limit, MAX_REQUEST_CHARS - 200)
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n[… {len(text) - limit} more characters cut; the whole text: {url or 'on the PR'}]"


def tail(text: str, limit: int) -> str:
    """The end of a log when it does not fit (the failure is at the end)."""
    limit = min(limit, MAX_REQUEST_CHARS - 200)
    return text if len(text) <= limit else f"[… {len(text) - limit} characters cut]\n" + text[-limit:]


@dataclass(frozen=True)
class Original:
    """What a follow-up needs of the task whose pull request it follows."""

    task_id: str
    agent: str
    tool: str | None                # only when the original task pinned one
    pr: int
    pr_url: str


def follow_up_document(original: Original, *, head_sha: str, trigger: str, event_id: str, request: str,
                       author: str | None, reply_to: tuple[str, int] | None, round_no: int | None,
                       created_at: str, title: str) -> dict[str, Any]:
    """The follow-up task file in the format the runner reads (core.follow_up validates it)."""
    block: dict[str, Any] = {"of": original.task_id, "pr": original.pr, "pr_url": original.pr_url,
                             "branch": task_branch(original.task_id), "head_sha": head_sha, "trigger": trigger,
                             "event_id": event_id}
    if author is not None:
        block["author"] = author
    if reply_to is not None:
        block["reply_to"] = {"kind": reply_to[0], "id": reply_to[1]}
    block["request"] = request
    if round_no is not None:
        block["round"] = round_no
    extra: dict[str, Any] = {"tool": original.tool} if original.tool else {}
    extra["follow_up"] = block
    return new_task_document(
        task_id=follow_up_id(original.task_id, event_id), agent=original.agent, title=title,
        description=f"Follow up pull request #{original.pr} on its own branch: see follow_up.request.\n",
        artefacts=[], priority="high", created_at=created_at, created_by=CREATED_BY, extra=extra)


def event_title(pr: int, event: Event) -> str:
    said = {"review": "review", "review_comment": "review comment", "comment": "comment"}[event.trigger]
    return f"Follow-up on PR #{pr}: {said} by {event.login}"


def ci_title(pr: int, failure: CiFailure) -> str:
    name = " ".join(printable(failure.name).split())[:80] or "check"
    return f"Follow-up on PR #{pr}: CI {name} failed"


def valid_login(login: str) -> bool:
    return bool(LOGIN.match(login))
