"""Follow the pull requests the daemon opened until they are merged or closed (the PR watcher).

A periodic job (off the loop's thread: the API may be slow) looks at every finished task with a pull
request that is not yet recorded merged or closed:

- merged: `result.merged_at` and `result.pr_state: merged` in its done/ file, `merged` in telemetry's
  `pull_requests` (cost per merged change, acceptance), and the loop is told so the ROADMAP.md item
  becomes Completed (`follow_up.complete_on_merge`); closed unmerged: `result.rejected_at`,
  `pr_state: rejected`, `closed` in telemetry;
- a review that requests changes, a review comment or an issue comment by a permitted login becomes a
  follow-up task in inbox/ (core.follow_up's format, id `<task>.fu-<event>`); anyone else is ignored
  and logged with the login; the daemon's own comments (the token's login) are skipped;
- a failing check run or commit status on the head becomes a fix task, one per head sha and at most
  `max_ci_fixes` per pull request; past that the pull request is labelled `needs-human` once, with one
  comment, and CI on it is never acted on again.

Exactly once across restarts: an event is recorded (pr_watch_state) only after its task file exists,
and a task id found anywhere on the board or in the history table is never written again. Reads are
conditional (ETags kept in the state file), so an idle pull request costs no rate limit.
"""

from __future__ import annotations

import contextlib
import glob
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from conveyor.board import layout as board
from conveyor.board.history import DONE, History
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.core.errors import ConveyorError, TaskFileError
from conveyor.core.follow_up import follow_up_id
from conveyor.core.state_files import HISTORY_FILE, task_branch
from conveyor.core.task import SAFE_NAME, parse_task, validate_document
from conveyor.core.timeutil import Clock, parse_iso, utc_iso
from conveyor.pipeline import pr_events
from conveyor.pipeline.pr_events import CiFailure, Event, Original
from conveyor.pipeline.pr_watch_state import CI_TASK, GAVE_UP, WatchState
from conveyor.publish.flow import destination
from conveyor.publish.github_types import GitHubError
from conveyor.publish.pr_conversation import WRITE_PERMISSIONS, Fetched, PullConversation
from conveyor.telemetry.base import TelemetryStore

log = structlog.get_logger("conveyor.pipeline.pr_watch")
GIVE_UP_MARK = "<!-- conveyor:needs-human -->"
_PR_NUMBER = re.compile(r"/pull/([0-9]{1,10})/?\Z")
Connect = Callable[[Config, str, str], PullConversation]


@dataclass
class WatchReport:
    """What one pass did (ids of tasks written, numbers of pull requests decided)."""

    polled: int = 0
    tasks: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    merged: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    gave_up: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Candidate:
    path: Path
    original: Original
    document: dict[str, Any]


def connect_github(config: Config, repo: str, token: str) -> PullConversation:
    prs = config.daemon.pull_requests
    return PullConversation.connect(prs.api_url, token, repo, token_source=f"${prs.token_env}")


class PullWatcher:
    """One repository's watcher; `run` is one pass (call it from one thread at a time)."""

    def __init__(self, config: Callable[[], Config], env: Mapping[str, str], layout: BoardLayout,
                 telemetry: TelemetryStore, clock: Clock, *, on_merged: Callable[[], None] | None = None,
                 connect: Connect = connect_github) -> None:
        self._config = config
        self._env = env
        self._layout = layout
        self._telemetry = telemetry
        self._clock = clock
        self._on_merged = on_merged
        self._connect = connect
        self.state = WatchState(config().state_dir)
        self._warned = False

    def close(self) -> None:
        self.state.close()

    def run_safely(self) -> None:
        """`run` for the daemon's executor: a failure is logged and the next pass tries again."""
        try:
            self.run()
        except (ConveyorError, OSError, sqlite3.Error) as exc:
            log.error("pr_watch.failed", error=str(exc))
        except Exception:
            log.exception("pr_watch.internal_error")
        finally:
            self.state.close()       # between passes no file is held open (reopened by the next pass)

    def run(self) -> WatchReport:
        report = WatchReport()
        config = self._config()
        if not config.daemon.follow_up.enabled:
            return report
        repo, token = self._target(config)
        if repo is None or token is None:
            return report
        candidates = self._candidates(config, repo)
        if not candidates:
            return report            # nothing open: not one request
        with self._connect(config, repo, token) as conversation:
            me = self._me(conversation)
            for candidate in candidates:
                try:
                    _Pass(self, config, conversation, repo, me, report).poll(candidate)
                except GitHubError as exc:
                    log.warning("pr_watch.pull_failed", task_id=candidate.original.task_id,
                                pr=candidate.original.pr, error=str(exc), transient=exc.transient)
                    if exc.transient and exc.status in (403, 429):
                        break             # rate-limited: the next pass goes on where this one stopped
                report.polled += 1
        log.info("pr_watch.passed", polled=report.polled, tasks=len(report.tasks), ignored=len(report.ignored),
                 merged=report.merged, rejected=report.rejected, gave_up=report.gave_up)
        return report

    # -- where and who ---------------------------------------------------------------------------

    def _target(self, config: Config) -> tuple[str | None, str | None]:
        settings = config.daemon.pull_requests
        repo = destination(config.repo, config.daemon).github_repo
        token = self._env.get(settings.token_env, "").strip()
        if not settings.enabled or repo is None or not token:
            if not self._warned:
                self._warned = True
                log.warning("pr_watch.off", reason="follow_up.enabled is true but pull requests cannot be read: "
                            f"pull_requests.enabled={settings.enabled}, repository={repo or 'unknown'}, "
                            f"${settings.token_env} {'set' if token else 'unset'}")
            return None, None
        return repo, token

    def _me(self, conversation: PullConversation) -> str:
        """The token's login (cached with its ETag, so asking again costs nothing)."""
        fetched = conversation.me(self.state.etag("user"))
        if fetched.changed and isinstance(fetched.data, Mapping) and fetched.data.get("login"):
            self.state.set_meta("login", str(fetched.data["login"]))
            self.state.set_etag("user", fetched.etag)
        return self.state.meta("login") or ""

    def _candidates(self, config: Config, repo: str) -> list[_Candidate]:
        """Finished tasks whose pull request in `repo` is not yet recorded merged or closed."""
        settled = self.state.settled(repo)
        found = []
        for path, known_url in self._done_with_pull_requests(config):
            if (known_url is not None and _number(known_url, repo) in settled) or ".fu-" in path.stem:
                continue              # decided earlier, or a follow-up (its PR is its original's): not even read
            try:
                task = parse_task(path)
            except (OSError, TaskFileError):
                continue
            result = task.data.get("result")
            if not isinstance(result, Mapping) or "follow_up" in task.data or task.data.get("status") != "done":
                continue
            url = str(result.get("pr_url") or "")
            number = _number(url, repo)
            if number is None or number in settled or result.get("merged_at") or result.get("rejected_at"):
                continue
            tool = task.data.get("tool")
            original = Original(task.id, task.agent, str(tool) if isinstance(tool, str) and tool else None,
                                number, url)
            found.append(_Candidate(path, original, task.data))
        return found

    def _done_with_pull_requests(self, config: Config) -> list[tuple[Path, str | None]]:
        """(file, pull request URL) from the history table (no file read), else every done/ file whose text
        names a pull request (URL unknown until it is read)."""
        path = config.state_dir / HISTORY_FILE
        history = History(path, readonly=True)
        try:
            if path.is_file() and history.complete:
                found: list[tuple[Path, str | None]] = []
                for entry in history.in_area(DONE):
                    result = entry.facts.get("result")
                    if isinstance(result, Mapping) and result.get("pr_url"):
                        found.append((config.board_root / entry.file, str(result["pr_url"])))
                return found
        except sqlite3.Error:
            pass
        finally:
            history.close()
        scanned: list[tuple[Path, str | None]] = []
        for candidate in sorted(self._layout.done.glob("*/*.yaml")):
            with contextlib.suppress(OSError):
                if "pr_url: http" in candidate.read_text(encoding="utf-8", errors="replace"):
                    scanned.append((candidate, None))
        return scanned

    # -- used by a pass --------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def exists(self, task_id: str) -> bool:
        """A task id anywhere on the board (inbox, assigned, done, archive, _rejected) or in the history."""
        if board.find_task(self._layout, task_id) is not None:
            return True
        history = History(self._config().state_dir / HISTORY_FILE, readonly=True)
        try:
            return history.path.is_file() and history.get(task_id) is not None
        except sqlite3.Error:
            return False
        finally:
            history.close()

    def ci_tasks_on_board(self, task_id: str) -> int:
        """CI fix tasks of a task's pull request anywhere on the board: the cap holds even when this node's
        state file is new (another fleet node led before, or the state folder was lost)."""
        names: set[str] = set()
        for folder in board.all_folders(self._layout):
            for prefix in (f"{task_id}.fu-ck", f"{task_id}.fu-st"):
                names.update(path.name for path in folder.glob(f"{glob.escape(prefix)}*.yaml"))
        return len(names)

    def write_task(self, document: dict[str, Any]) -> bool:
        """Write a follow-up task into inbox/ unless its id is already anywhere; False when it is not valid."""
        task_id = str(document["id"])
        if self.exists(task_id):
            return True
        target = self._layout.inbox / f"{task_id}.yaml"
        try:
            validate_document(target, document, "")
        except TaskFileError as exc:
            log.error("pr_watch.task_invalid", task_id=task_id, problems=[p.message for p in exc.problems])
            return False
        board.create_task(self._layout, document)
        log.info("pr_watch.task_written", task_id=task_id, file=str(target))
        return True

    def decided(self, candidate: _Candidate, state: str, at_text: str | None) -> None:
        """Record merged or rejected in the task's result and in telemetry (acceptance, cost per merge)."""
        now = self._clock()
        at = parse_iso(at_text) if at_text else None
        stamp = utc_iso(at if at is not None else now)
        try:
            task = parse_task(candidate.path)
        except (OSError, TaskFileError) as exc:
            log.warning("pr_watch.task_unreadable", task_id=candidate.original.task_id, error=str(exc))
            return
        result = dict(task.data.get("result") or {})
        key = "merged_at" if state == "merged" else "rejected_at"
        result.update({key: stamp, "pr_state": "merged" if state == "merged" else "rejected"})
        board.rewrite(task, {"result": result})
        branch = str(result.get("branch") or task_branch(task.id))
        self._telemetry.record_outcome({"branch": branch, "task_id": task.id, "agent": task.agent,
                                        "tool": result.get("tool"), "pr_url": candidate.original.pr_url},
                                       "merged" if state == "merged" else "closed", now)
        log.info("pr_watch.decided", task_id=task.id, pr=candidate.original.pr, state=state, at=stamp)
        if state == "merged" and self._on_merged is not None:
            self._on_merged()


class _Pass:
    """One pull request in one pass: its state, its conversation, its checks."""

    def __init__(self, watcher: PullWatcher, config: Config, conversation: PullConversation, repo: str, me: str,
                 report: WatchReport) -> None:
        self.w, self.config, self.c, self.repo, self.me, self.report = watcher, config, conversation, repo, me, report
        self.settings = config.daemon.follow_up
        self.state = watcher.state
        self._permitted: dict[str, bool] = {}

    def poll(self, candidate: _Candidate) -> None:
        original = candidate.original
        number = original.pr
        watched = self.state.watch(self.repo, number, original.task_id)
        key = f"{number}:pull"
        pull = self.c.pull(number, self.state.etag(key))
        head, state = watched.head_sha, watched.state
        if pull.changed and isinstance(pull.data, Mapping):
            head_info = pull.data.get("head") if isinstance(pull.data.get("head"), Mapping) else {}
            assert isinstance(head_info, Mapping)
            head = str(head_info.get("sha") or head or "")
            state = "merged" if pull.data.get("merged_at") else str(pull.data.get("state") or "open")
            if state in ("merged", "closed"):
                at = pull.data.get("merged_at") if state == "merged" else pull.data.get("closed_at")
                self.w.decided(candidate, state, str(at) if at else None)
                (self.report.merged if state == "merged" else self.report.rejected).append(number)
            self.state.seen_pull(self.repo, number, state, head, self.w.now() if state != "open" else None)
            self.state.set_etag(key, pull.etag)
        if state != "open" or not head:
            return
        self.conversation(original, head)
        self.checks(original, head)

    # -- the conversation ------------------------------------------------------------------------

    def conversation(self, original: Original, head: str) -> None:
        number = original.pr
        keys = (f"{number}:reviews", f"{number}:review_comments", f"{number}:comments")
        readers = (self.c.reviews, self.c.review_comments, self.c.issue_comments)
        fetched = [read(number, self.state.etag(key)) for read, key in zip(readers, keys, strict=True)]
        if not any(f.changed for f in fetched):
            return
        # something changed: the unchanged lists are read again in full (a review and its comments belong together)
        fetched = [f if f.changed else read(number, None) for f, read in zip(fetched, readers, strict=True)]
        reviews, line_comments, comments = (_items(f) for f in fetched)
        known_reviews = {r.get("id") for r in reviews}
        # a line comment of a review submitted after the reviews were read waits for the next pass
        early = [c for c in line_comments if c.get("pull_request_review_id") not in (None, *known_reviews)]
        ready = [c for c in line_comments if c not in early]
        folding = set(pr_events.folding_reviews(reviews, ready))
        events = (pr_events.review_events(reviews, ready) + pr_events.comment_events(ready, folding)
                  + pr_events.issue_events(comments))
        for event in events:
            if not self.state.handled(self.repo, event.event_id):
                self.act(original, head, event)
        for (key, f), ok in zip(zip(keys, fetched, strict=True), (True, not early, True), strict=True):
            if ok:
                self.state.set_etag(key, f.etag)

    def act(self, original: Original, head: str, event: Event) -> None:
        now, number = self.w.now(), original.pr
        if self.me and event.login.lower() == self.me.lower():
            self.state.record(self.repo, number, event.event_id, "own", now)
            return
        if not pr_events.valid_login(event.login) or not self.permitted(event.login, event.is_bot):
            log.warning("pr_watch.ignored", pr=number, task_id=original.task_id, event_id=event.event_id,
                        login=event.login, bot=event.is_bot,
                        reason="not permitted to drive an agent: not in follow_up.permitted and not a collaborator "
                               "with write access")
            self.state.record(self.repo, number, event.event_id, "ignored", now)
            self.report.ignored.append(event.event_id)
            return
        if not event.body.strip():
            self.state.record(self.repo, number, event.event_id, "skipped", now)
            return
        task_id = follow_up_id(original.task_id, event.event_id)
        if not SAFE_NAME.match(task_id):
            log.error("pr_watch.id_too_long", task_id=original.task_id, event_id=event.event_id,
                      fix="a follow-up's id is <task id>.fu-<event>; shorten the original task's id")
            self.state.record(self.repo, number, event.event_id, "skipped", now)
            return
        request = pr_events.bound(event.body, self.settings.request_max_chars, event.url)
        document = pr_events.follow_up_document(
            original, head_sha=head, trigger=event.trigger, event_id=event.event_id, request=request,
            author=event.login, reply_to=(event.reply_kind, event.reply_id), round_no=None,
            created_at=utc_iso(now), title=pr_events.event_title(number, event))
        if not self.w.write_task(document):
            self.state.record(self.repo, number, event.event_id, "invalid", now)   # logged once, not each pass
            return
        self.report.tasks.append(task_id)
        self.state.record(self.repo, number, event.event_id, "task", now, sha=head, task_id=task_id)
        for folded in event.folds:
            self.state.record(self.repo, number, folded, "in_review", now)

    def permitted(self, login: str, is_bot: bool) -> bool:
        lowered = login.lower()
        if lowered in {name.lower() for name in self.settings.permitted}:
            return True
        if is_bot or not self.settings.collaborators:
            return False          # an app or bot drives an agent only when named in follow_up.permitted
        if lowered not in self._permitted:
            self._permitted[lowered] = self.c.permission(login) in WRITE_PERMISSIONS
        return self._permitted[lowered]

    # -- CI ----------------------------------------------------------------------------------------

    def checks(self, original: Original, head: str) -> None:
        number = original.pr
        keys = (f"{number}:check_runs", f"{number}:status")
        runs = self.c.check_runs(head, self.state.etag(keys[0]))
        status = self.c.combined_status(head, self.state.etag(keys[1]))
        if not runs.changed and not status.changed:
            return
        runs = runs if runs.changed else self.c.check_runs(head)
        status = status if status.changed else self.c.combined_status(head)
        failures = pr_events.ci_failures(_items(runs), status.data if isinstance(status.data, Mapping) else None)
        if failures:
            self.ci_failed(original, head, failures)
        for key, fetched in zip(keys, (runs, status), strict=True):
            self.state.set_etag(key, fetched.etag)

    def ci_failed(self, original: Original, head: str, failures: Sequence[CiFailure]) -> None:
        number, now = original.pr, self.w.now()
        fixes, shas, gave_up = self.state.ci_fixes(self.repo, number)
        fixes = max(fixes, self.w.ci_tasks_on_board(original.task_id))
        if head in shas or gave_up:
            return                        # one fix per head; after giving up, never again
        for failure in failures:          # written before a crash that kept it from being recorded
            task_id = follow_up_id(original.task_id, failure.event_id)
            if self.w.exists(task_id):
                self.state.record(self.repo, number, failure.event_id, CI_TASK, now, sha=head, task_id=task_id)
                return
        if fixes >= self.settings.max_ci_fixes:
            self.give_up(original, head, fixes)
            return
        failure = failures[0]
        request = self.ci_request(head, failure, failures[1:])
        document = pr_events.follow_up_document(
            original, head_sha=head, trigger="check", event_id=failure.event_id, request=request, author=None,
            reply_to=None, round_no=fixes + 1, created_at=utc_iso(now), title=pr_events.ci_title(number, failure))
        if self.w.write_task(document):
            task_id = str(document["id"])
            self.report.tasks.append(task_id)
            self.state.record(self.repo, number, failure.event_id, CI_TASK, now, sha=head, task_id=task_id)
            log.info("pr_watch.ci_fix", pr=number, task_id=task_id, check=failure.name, round=fixes + 1,
                     of=self.settings.max_ci_fixes)

    def ci_request(self, head: str, failure: CiFailure, others: Sequence[CiFailure]) -> str:
        lines = self.settings.log_tail_lines
        text = self.c.log_tail(failure.job_id, lines) if failure.job_id is not None else None
        parts = [f"CI job {failure.name!r} failed on {head}."]
        if failure.detail.strip():
            parts.append(failure.detail.strip())
        if text:
            parts.append(f"The last {lines} lines of its log:\n{text}")
        elif failure.url:
            parts.append(f"Its details: {failure.url}")
        if others:
            parts.append("Also failing: " + ", ".join(sorted({other.name for other in others})))
        return pr_events.tail("\n\n".join(parts), self.settings.request_max_chars)

    def give_up(self, original: Original, head: str, fixes: int) -> None:
        """Label the pull request and say so once; CI on it is never acted on again."""
        number, label = original.pr, self.settings.needs_human_label
        self.c.add_label(number, label)
        said = _items(self.c.issue_comments(number))
        if not any(GIVE_UP_MARK in str(c.get("body") or "") for c in said
                   if str(_user(c)).lower() == self.me.lower()):
            self.c.comment(number, f"{GIVE_UP_MARK}\nCI still fails on {head[:12]} after {fixes} fix "
                                   f"attempt{'s' if fixes != 1 else ''} by Conveyor (`follow_up.max_ci_fixes`). "
                                   f"Labelled `{label}`: Conveyor will not react to CI on this pull request again.")
        self.state.record(self.repo, number, f"gave-up-{number}", GAVE_UP, self.w.now(), sha=head)
        self.report.gave_up.append(number)
        log.warning("pr_watch.gave_up", pr=number, task_id=original.task_id, fixes=fixes, label=label)


def _items(fetched: Fetched) -> list[dict[str, Any]]:
    data = fetched.data
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _user(item: Mapping[str, Any]) -> str:
    user = item.get("user")
    return str(user.get("login") or "") if isinstance(user, Mapping) else ""


def _number(url: str, repo: str) -> int | None:
    """The pull request number of an html_url in `repo` (another repository's pull request is not ours)."""
    found = _PR_NUMBER.search(url)
    if found is None or f"/{repo}/pull/" not in url:
        return None
    return int(found[1])
