"""The fleet's board leader: what was asked comes from the remote, board moves go back to it as commits.

Every node works in its own clone, so the board the person reads is a branch of the remote
(`fleet.board_branch`, default `conveyor/board`; never the base branch, which Conveyor does not push).
One pass of the leader:

1. fetch the base branch and the board branch;
2. take what was asked: task files in the base branch's `inbox/` (and the board branch's own `inbox/`)
   that the board branch does not show in `assigned/`, `done/` or `archive/` yet; a readable one is offered
   to the fleet through the database with its text and moved to `assigned/<agent>/` on the board, an
   unreadable one goes to the rejected folder with its report (once per version of the file);
3. finished tasks' outcomes, which their nodes recorded in the database under their fence, become
   `done/<agent>/<file>` on the board (and leave `assigned/`);
4. commit on the fetched board tip (with the leader's epoch as a trailer) and push it as a fast-forward,
   after checking the leader's epoch in the database. A push rejected because the remote moved: fetch and
   redo the pass on the new tip (moves are a function of the database and the asked files, so redoing one
   is safe). A board tip carrying a newer epoch means another node leads: this one writes nothing.

Runs off the loop's thread (git and the network may be slow); it touches no loop state.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import structlog

from conveyor.board import handoff_tasks as handoffs
from conveyor.board.index import Known
from conveyor.board.layout import REJECTED
from conveyor.board.remote_board import Draft, RemoteBoard
from conveyor.config import Config
from conveyor.coordination import Asked, BoardLedger, Outcome
from conveyor.coordination.base import Unreachable
from conveyor.core import yamlio
from conveyor.core.errors import GitError, Problem, TaskFileError
from conveyor.core.task import TASK_SUFFIXES, Task, validate_document
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon import board_roadmap
from conveyor.daemon.board_roadmap import RoadmapRow
from conveyor.scheduling import queue

log = structlog.get_logger("conveyor.daemon.board_keeper")
PUSH_TRIES = 5
INDEX_FILE = "fleet-board.index"
SETTLED = ("assigned", "done", "archive")   # a task file in one of these on the board was asked already


class BoardKeeper:
    def __init__(self, config: Callable[[], Config], ledger: BoardLedger, clock: Clock) -> None:
        self._config = config
        self._ledger = ledger
        self._clock = clock
        self._last = float("-inf")
        self._seen: tuple[str | None, str | None] | None = None   # the remote's tips after the last pass

    def due(self) -> bool:
        return time.monotonic() - self._last >= self._config().daemon.fleet.sync_s

    def run(self) -> None:
        """One leader pass (see the module docstring); never raises: the next pass tries again."""
        self._last = time.monotonic()
        try:
            for _try in range(PUSH_TRIES):
                if self._pass():
                    return
                log.info("fleet.board_push_rejected", note="the remote's board branch moved: fetched, redoing")
            log.warning("fleet.board_push_gave_up", tries=PUSH_TRIES, note="tried again on the next pass")
        except (GitError, OSError) as exc:
            log.warning("fleet.board_git_failed", error=str(exc), note="tried again on the next pass")
        except Unreachable as exc:
            log.warning("fleet.board_db_unreachable", error=str(exc), note="tried again on the next pass")

    def _remote(self) -> RemoteBoard:
        config = self._config()
        settings = config.daemon
        remote = settings.remote.name
        if not remote:
            raise GitError("a fleet needs remote.name in daemon.yaml")
        return RemoteBoard(config.repo, remote, settings.base_branch, settings.fleet.board_branch,
                           config.state_dir / INDEX_FILE)

    def _pass(self) -> bool:
        """True when done (pushed, nothing to push, or not ours to push); False: the push was rejected."""
        config = self._config()
        board_dir = config.daemon.board_dir.strip("/")
        remote = self._remote()
        tips = remote.tips()
        outcomes = self._ledger.unapplied()
        if tips == self._seen and not outcomes:
            return True                       # nothing asked, nothing finished since the last pass
        remote.fetch()
        draft = remote.draft(board_dir)
        tip_epoch = remote.epoch_of(draft.board_tip)
        if tip_epoch > self._ledger.epoch:
            log.warning("fleet.board_stale", epoch=self._ledger.epoch, board_epoch=tip_epoch,
                        note="a newer leader wrote the board: this node writes nothing")
            return True
        handoffs: list[Asked] = []
        for outcome in outcomes:    # first: a task waiting for one of these may be asked in this very pass
            handoffs += self._apply(remote, draft, board_dir, outcome, config)
        asked, rejected = self._intake(remote, draft, board_dir, {o.task_id: o.status for o in outcomes})
        asked += handoffs
        if config.daemon.roadmap.enabled:
            asked += self._roadmap(remote, draft, board_dir, config)
        self._ledger.offer(asked)      # before the push: a task the board shows as assigned is in the database
        events = ([f"assigned {a.task_id}" for a in asked] + [f"rejected {name}" for name in rejected]
                  + [f"{o.status} {o.task_id}" for o in outcomes])
        author = (config.daemon.commit.author_name, config.daemon.commit.author_email)
        sha = remote.commit(draft, _message(events), self._ledger.epoch, author) if draft.changed else None
        if sha is None:
            self._ledger.applied([o.task_id for o in outcomes])
            self._seen = (draft.base_tip, draft.board_tip)
            return True
        if not self._ledger.still_leading():
            log.warning("fleet.board_fenced", epoch=self._ledger.epoch, note="leadership passed on: not pushed")
            return True
        if not remote.push(sha):
            return False
        self._ledger.applied([o.task_id for o in outcomes])
        self._seen = (draft.base_tip, sha)
        log.info("fleet.board_pushed", commit=sha, branch=remote.branch, assigned=len(asked),
                 finished=len(outcomes), rejected=len(rejected), epoch=self._ledger.epoch)
        return True

    # ---------------------------------------------------------------- what was asked
    def _intake(self, remote: RemoteBoard, draft: Draft, board_dir: str,
                finished: dict[str, str]) -> tuple[list[Asked], list[str]]:
        settled = {PurePosixPath(p).stem for p in draft.files if _folder(p, board_dir) in SETTLED}
        rejected_dir = f"{board_dir}/{REJECTED}"
        sources = list(remote.entries(draft.base_tip, f"{board_dir}/inbox").items())
        if draft.board_tip is not None:
            sources += [(p, blob) for p, blob in draft.files.items() if _folder(p, board_dir) == "inbox"]
        wanted: dict[str, tuple[str, str]] = {}      # stem → (path, blob): the base branch's copy first
        for path, blob in sources:
            pure = PurePosixPath(path)
            if pure.suffix in TASK_SUFFIXES and pure.stem not in settled and pure.stem not in wanted:
                wanted[pure.stem] = (path, blob)
        contents = remote.read_blobs(sorted({blob for _path, blob in wanted.values()}))
        asked: list[Asked] = []
        rejected: list[str] = []
        readable: list[tuple[str, str, bytes, Task]] = []
        for path, blob in wanted.values():
            name = PurePosixPath(path).name
            data = contents.get(blob, b"")
            try:
                readable.append((path, blob, data, _parse(path, data)))
            except TaskFileError as exc:
                report = f"{rejected_dir}/{name}.error.yaml"
                if report in draft.files and _digest(data) in remote.read(draft.parent, report).decode(
                        "utf-8", "replace"):
                    continue                          # this very version was rejected already
                remote.put_blob(draft, f"{rejected_dir}/{name}", blob)
                remote.put(draft, report, _report(name, data, exc.problems, utc_iso(self._clock())).encode())
                remote.remove(draft, f"{board_dir}/inbox/{name}")
                rejected.append(name)
                log.error("fleet.task_rejected", file=path, problems=[p.render() for p in exc.problems])
        # as on a single host, a task waits in inbox/ until each of its dependencies is done on the board
        ready = queue.plan([task for *_rest, task in readable], _known(remote, draft, board_dir, finished), {})
        runnable = {task.id for task in ready.runnable}
        for waiting in ready.waiting:
            log.debug("fleet.task_waiting", task_id=waiting.task.id, reason=waiting.reason)
        for group in ready.cycles:
            log.warning("fleet.dependency_cycle", task_ids=[task.id for task in group],
                        fix="remove one of the dependencies so the tasks can run in order")
        for path, blob, data, task in readable:
            if task.id not in runnable:
                continue
            name = PurePosixPath(path).name
            target = f"assigned/{task.agent}/{name}"
            remote.remove(draft, f"{board_dir}/inbox/{name}")
            remote.put_blob(draft, f"{board_dir}/{target}", blob)
            asked.append(Asked(task.id, target, task.agent, -task.priority_rank, data.decode("utf-8"),
                               draft.base_tip))
        return asked, rejected

    def _roadmap(self, remote: RemoteBoard, draft: Draft, board_dir: str, config: Config) -> list[Asked]:
        """ROADMAP.md of the base branch: the items that run next become tasks, and the board branch's copy
        carries every roadmap task's status line (board_roadmap.py)."""
        path = config.daemon.roadmap.file.strip("/")
        try:
            base_text = remote.read(draft.base_tip, path).decode("utf-8")
        except (GitError, UnicodeDecodeError):
            return []                                        # no ROADMAP.md on the base branch
        rows = [RoadmapRow(*row) for row in self._ledger.roadmap_rows()]
        settled = {PurePosixPath(p).stem for p in draft.files if _folder(p, board_dir) in (*SETTLED, REJECTED)}
        text, tasks = board_roadmap.plan(base_text, rows, settled, config, utc_iso(self._clock()))
        asked = []
        for task in tasks:
            data = yamlio.dumps(task.data)
            target = f"assigned/{task.agent}/{task.id}.yaml"
            remote.put(draft, f"{board_dir}/{target}", data.encode("utf-8"))
            asked.append(Asked(task.id, target, task.agent, -task.priority_rank, data, draft.base_tip))
        try:
            current = remote.read(draft.parent, path).decode("utf-8", "replace")
        except GitError:
            current = None
        if text != current:
            remote.put(draft, path, text.encode("utf-8"))
        return asked

    # ---------------------------------------------------------------- what finished
    def _apply(self, remote: RemoteBoard, draft: Draft, board_dir: str, outcome: Outcome,
               config: Config) -> list[Asked]:
        """The finished file into done/ (out of inbox/ and assigned/), and its hand-off when it names one."""
        name = PurePosixPath(outcome.path).name
        for path in [p for p in draft.files if PurePosixPath(p).name == name
                     and _folder(p, board_dir) in ("inbox", "assigned")]:
            remote.remove(draft, path)
        document, asked = outcome.document, list[Asked]()
        if outcome.status == "done" and config.daemon.handoffs == "conveyor":
            document, asked = self._handoff(remote, draft, board_dir, outcome)
        remote.put(draft, f"{board_dir}/done/{outcome.agent}/{name}", document.encode("utf-8"))
        return asked

    def _handoff(self, remote: RemoteBoard, draft: Draft, board_dir: str, outcome: Outcome) -> tuple[str, list[Asked]]:
        """A fleet's hand-off: the leader writes the follow-up straight into the board branch's assigned/ in
        the commit that records its parent done (its one dependency), so both land or neither does. A node
        makes none in its own clone, where no one would read it. Returns the parent's file (with
        `result.handoff_task`) and the follow-up to offer."""
        try:
            parent = _parse(outcome.path, outcome.document.encode("utf-8"))
        except TaskFileError:
            return outcome.document, []
        agent = handoffs.handoff_agent(parent)
        result = parent.data.get("result")
        if agent is None or not isinstance(result, dict) or "handoff_task" in result:
            return outcome.document, []
        task_id = handoffs.followup_id(parent.id, agent)
        result["handoff_task"] = task_id
        document = yamlio.dumps(parent.data)
        if any(handoffs.is_followup_name(PurePosixPath(p).stem, parent.id, agent) for p in draft.files
               if _folder(p, board_dir)):
            log.info("fleet.handoff_exists", task_id=parent.id, followup=task_id)
            return document, []
        data = yamlio.dumps(handoffs.handoff_document(parent, agent, utc_iso(self._clock())))
        target = f"assigned/{agent}/{task_id}.yaml"
        remote.put(draft, f"{board_dir}/{target}", data.encode("utf-8"))
        log.info("fleet.handoff_created", task_id=parent.id, followup=task_id, agent=agent)
        return document, [Asked(task_id, target, agent, -parent.priority_rank, data, draft.base_tip)]


def _known(remote: RemoteBoard, draft: Draft, board_dir: str,
           finished: dict[str, str]) -> Callable[[str], Known | None]:
    """Where the board branch holds a task outside `inbox/`, for the dependency check: a file in `done/`
    says done or error (its `status`; this pass's outcomes are known without reading), `archive/` is done,
    `assigned/` is still running."""
    where = {PurePosixPath(p).stem: p for p in draft.files if _folder(p, board_dir) in SETTLED}

    def known(task_id: str) -> Known | None:
        path = where.get(task_id)
        if path is None:
            return None
        folder = _folder(path, board_dir)
        status = "done" if folder == "archive" else "assigned" if folder == "assigned" else finished.get(task_id)
        if status is None:
            try:
                document = yamlio.loads(remote.read(draft.parent, path).decode("utf-8", "replace"))
            except (GitError, ValueError):
                document = None
            status = str(document.get("status")) if isinstance(document, dict) else "error"
        return Known(task_id, status, Path(path))

    return known


def _folder(path: str, board_dir: str) -> str:
    pure = PurePosixPath(path)
    if not pure.is_relative_to(board_dir):
        return ""                                  # ROADMAP.md
    parts = pure.relative_to(board_dir).parts
    return parts[0] if len(parts) > 1 else ""


def _parse(path: str, data: bytes) -> Task:
    if len(data) > yamlio.MAX_FILE_BYTES:
        raise TaskFileError([Problem(path, f"is {len(data)} bytes, over the {yamlio.MAX_FILE_BYTES} limit",
                                     "split the description, or link to a file in the repository")])
    try:
        document = yamlio.loads(data)
    except yamlio.YamlProblem as exc:
        raise TaskFileError([Problem(path, exc.message, exc.fix, line=exc.line)]) from exc
    return validate_document(Path(path), document, data.decode("utf-8", "replace"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _report(name: str, data: bytes, problems: list[Problem], now_iso: str) -> str:
    stem = PurePosixPath(name).stem
    return yamlio.dumps({
        "file": name,
        "rejected_at": now_iso,
        "sha256": _digest(data),
        "problems": [{k: v for k, v in p.as_dict().items() if v not in (None, "")} | {"file": name}
                     for p in problems],
        "what_to_do": f"fix the problems above in the base branch's inbox/{name} (keep the name "
                      f"{stem}.yaml); the board leader reads it again once it changes",
    })


def _message(events: list[str]) -> str:
    counts: dict[str, int] = {}
    for line in events:
        kind = line.split(" ", 1)[0]
        counts[kind] = counts.get(kind, 0) + 1
    summary = ", ".join(f"{kind} {count}" for kind, count in counts.items()) or "sync"
    body = "\n".join(f"- {line}" for line in events[:200])
    more = f"\n- ... and {len(events) - 200} more" if len(events) > 200 else ""
    return f"chore(conveyor): board: {summary}\n\n{body}{more}\n"
