"""The `follow_up:` block of a task that continues an open pull request (issue 13, "Follow the PR").

The watcher writes such a task when a permitted person asks for changes on a PR, or a check on its head
fails; the runner commits on the PR's own branch and answers on its thread. Everything here is read from a
file on the board (a shared folder, written by a program that read text from GitHub), so it is checked as
hostile: ids and branch names are safe names, the branch is exactly the original task's `conveyor/<of>`,
and the text a person wrote travels only as data (the agent's prompt), never into a shell or a ref.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.core.errors import Problem
from conveyor.core.state_files import task_branch

TRIGGERS = ("review", "review_comment", "comment", "check")
REPLY_KINDS = ("issue_comment", "review_comment", "review")
# the event id's kind prefix for each trigger: r<review id>, rc<review comment id>, c<issue comment id>,
# ck<check run id> or st<commit status id>
EVENT_PREFIXES: dict[str, tuple[str, ...]] = {"review": ("r",), "review_comment": ("rc",), "comment": ("c",),
                                              "check": ("ck", "st")}
EVENT_ID = re.compile(r"(rc|ck|st|r|c)([0-9]{1,20})\Z")
LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:\[bot\])?\Z")
SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?\Z")
MAX_REQUEST_CHARS = 32_000
REQUIRED = ("of", "pr", "branch", "head_sha", "trigger", "event_id", "request")
_FIELD = "follow_up"
_EXAMPLE = ("follow_up: {of: <original task id>, pr: 7, branch: conveyor/<original task id>, head_sha: <40 hex>, "
            "trigger: comment, event_id: c123, author: <login>, reply_to: {kind: issue_comment, id: 123}, "
            "request: <the words>}")


@dataclass(frozen=True)
class ReplyTo:
    """The thread the answer goes to: an issue comment (the PR's conversation), a review comment, a review."""

    kind: str
    id: int


@dataclass(frozen=True)
class FollowUp:
    """A validated `follow_up:` block."""

    of: str
    pr: int
    branch: str
    head_sha: str
    trigger: str
    event_id: str
    request: str
    pr_url: str | None = None
    author: str | None = None
    reply_to: ReplyTo | None = None
    round: int | None = None

    @property
    def is_check(self) -> bool:
        return self.trigger == "check"


def follow_up_id(of: str, event_id: str) -> str:
    """The follow-up task's id: deterministic, so a restarted watcher cannot write the same event twice."""
    return f"{of}.fu-{event_id}"


def read_follow_up(value: Any) -> FollowUp | None:
    """The block of a task that already passed `follow_up_problems` (None when the task has none)."""
    if not isinstance(value, Mapping):
        return None
    reply = value.get("reply_to")
    reply_to = ReplyTo(str(reply["kind"]), int(reply["id"])) if isinstance(reply, Mapping) else None
    round_no = value.get("round")
    return FollowUp(of=str(value["of"]), pr=int(value["pr"]), branch=str(value["branch"]),
                    head_sha=str(value["head_sha"]), trigger=str(value["trigger"]),
                    event_id=str(value["event_id"]), request=str(value["request"]),
                    pr_url=str(value["pr_url"]) if value.get("pr_url") else None,
                    author=str(value["author"]) if value.get("author") else None, reply_to=reply_to,
                    round=int(round_no) if isinstance(round_no, int) else None)


def follow_up_problems(name: str, document: Mapping[str, Any], line: int | None,
                       safe_name: re.Pattern[str], branch_problem: Callable[[str], str | None]) -> list[Problem]:
    """Everything wrong with `document['follow_up']`, each naming the key and its fix.

    `safe_name` and `branch_problem` are the task model's own id rules (passed in: core.task imports this)."""
    value = document.get(_FIELD)
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [_problem(name, line, "", f"is a {type(value).__name__}, not a mapping", f"write it as {_EXAMPLE}")]
    problems = [_problem(name, line, key, "is missing", f"add `{key}:` ({_EXAMPLE})")
                for key in REQUIRED if value.get(key) in (None, "")]
    if problems:
        return problems
    problems += _identity(name, line, document, value, safe_name, branch_problem)
    problems += _event(name, line, value)
    problems += _people(name, line, value)
    return problems


def _identity(name: str, line: int | None, document: Mapping[str, Any], value: Mapping[str, Any],
              safe_name: re.Pattern[str], branch_problem: Callable[[str], str | None]) -> list[Problem]:
    problems: list[Problem] = []
    of = value.get("of")
    if not isinstance(of, str) or not safe_name.match(of) or branch_problem(of) is not None:
        problems.append(_problem(name, line, "of", f"{_short(of)} is not a task id",
                                 "write the id of the task whose pull request this follows"))
        return problems
    expected = task_branch(of)
    if value.get("branch") != expected:
        problems.append(_problem(name, line, "branch", f"{_short(value.get('branch'))} is not the branch of task "
                                 f"{of}", f"write `branch: {expected}` (a follow-up commits only on the "
                                 "original task's own branch)"))
    pr = value.get("pr")
    if not isinstance(pr, int) or isinstance(pr, bool) or not 0 < pr < 2**31:
        problems.append(_problem(name, line, "pr", f"{_short(pr)} is not a pull request number",
                                 "write the PR's number, e.g. `pr: 7`"))
    sha = value.get("head_sha")
    if not isinstance(sha, str) or not SHA.match(sha):
        problems.append(_problem(name, line, "head_sha", f"{_short(sha)} is not a commit sha",
                                 "write the PR head's full 40-character lowercase hex sha"))
    url = value.get("pr_url")
    if url is not None and (not isinstance(url, str) or not re.match(r"https?://[^\s]+\Z", url)):
        problems.append(_problem(name, line, "pr_url", f"{_short(url)} is not a web address",
                                 "write the PR's html_url, or leave `pr_url:` out"))
    event_id = value.get("event_id")
    if isinstance(event_id, str) and EVENT_ID.match(event_id):
        wanted = follow_up_id(of, event_id)
        if document.get("id") != wanted:
            problems.append(Problem(name, f"{_short(document.get('id'))} is not the id of this follow-up",
                                    f"set `id: {wanted}` (and name the file {wanted}.yaml): <of>.fu-<event_id>",
                                    field="id"))
    return problems


def _event(name: str, line: int | None, value: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    trigger, event_id = value.get("trigger"), value.get("event_id")
    if trigger not in TRIGGERS:
        problems.append(_problem(name, line, "trigger", f"{_short(trigger)} is not a trigger",
                                 "use " + ", ".join(TRIGGERS)))
    match = EVENT_ID.match(event_id) if isinstance(event_id, str) else None
    if match is None:
        problems.append(_problem(name, line, "event_id", f"{_short(event_id)} is not an event id",
                                 "write the kind prefix and GitHub id: r<review>, rc<review comment>, "
                                 "c<issue comment>, ck<check run> or st<status>"))
    elif trigger in TRIGGERS and match.group(1) not in EVENT_PREFIXES[str(trigger)]:
        problems.append(_problem(name, line, "event_id", f"{event_id!r} does not fit trigger {trigger!r}",
                                 "start it with " + " or ".join(EVENT_PREFIXES[str(trigger)])))
    request = value.get("request")
    if not isinstance(request, str):
        problems.append(_problem(name, line, "request", f"is a {type(request).__name__}, not text",
                                 "write the person's words (or the check's name and log tail) as text"))
    elif len(request) > MAX_REQUEST_CHARS:
        problems.append(_problem(name, line, "request", f"has {len(request)} characters",
                                 f"keep it under {MAX_REQUEST_CHARS} (the last lines of a log are enough)"))
    round_no = value.get("round")
    if round_no is not None and (not isinstance(round_no, int) or isinstance(round_no, bool) or round_no < 1):
        problems.append(_problem(name, line, "round", f"{_short(round_no)} is not a round number",
                                 "write 1, 2, ... (the CI fix's number on this PR), or leave `round:` out"))
    return problems


def _people(name: str, line: int | None, value: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    author, check = value.get("author"), value.get("trigger") == "check"
    if author is None and not check:
        problems.append(_problem(name, line, "author", "is missing",
                                 "add `author: <GitHub login>` (the permitted person who asked)"))
    elif author is not None and (not isinstance(author, str) or not LOGIN.match(author)):
        problems.append(_problem(name, line, "author", f"{_short(author)} is not a GitHub login",
                                 "write the login as GitHub spells it"))
    reply = value.get("reply_to")
    if reply is None:
        return problems
    if (not isinstance(reply, Mapping) or reply.get("kind") not in REPLY_KINDS
            or not isinstance(reply.get("id"), int) or isinstance(reply.get("id"), bool) or reply["id"] <= 0):
        problems.append(_problem(name, line, "reply_to", f"{_short(reply)} is not a thread to reply to",
                                 "write `reply_to: {kind: issue_comment | review_comment | review, id: <number>}`"
                                 " or leave it out"))
    return problems


def _problem(name: str, line: int | None, key: str, message: str, fix: str) -> Problem:
    return Problem(name, message, fix, field=f"{_FIELD}.{key}" if key else _FIELD, line=line)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
