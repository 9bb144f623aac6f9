"""The daemon's side of the coordinator: lead when elected, take this node's share of the work.

Single host: the node always leads and `pull` takes nothing (intake fills the ready queue directly). In a
fleet the leader's board keeper (board_keeper.py) offers what was asked to the database; every node then
takes leases for as many tasks as it has free slots, writes each task's document into its own clone's
board folder (a working copy: the board people read is the remote's board branch) and runs it there; a
task whose node died is taken over here (`recovery.take_over`, from the task branch the dead node pushed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path

import structlog

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.coordination import Coordinator
from conveyor.core import yamlio
from conveyor.core.errors import ConveyorError, GitError, TaskFileError
from conveyor.core.state_files import BRANCH_PREFIX, task_branch
from conveyor.core.task import SAFE_NAME, Task, parse_task
from conveyor.core.timeutil import Clock, utc_iso
from conveyor.daemon.board_keeper import BoardKeeper
from conveyor.daemon.offloop import OffLoop
from conveyor.daemon.ready_queue import ReadyQueue, signature
from conveyor.pipeline import recovery
from conveyor.pipeline.finish import Report
from conveyor.scheduling.availability import RouteCheck
from conveyor.scheduling.router import plan_routes
from conveyor.telemetry.base import TelemetryStore
from conveyor.workspace import git

log = structlog.get_logger("conveyor.daemon.fleet")


class FleetPump:
    def __init__(self, coordinator: Coordinator, config: Callable[[], Config], layout: BoardLayout,
                 ready: ReadyQueue, telemetry: TelemetryStore, clock: Clock, env: Mapping[str, str],
                 apply: Callable[[Report], None], executor: Executor) -> None:
        self.coordinator = coordinator
        self._config = config
        self._layout = layout
        self._ready = ready
        self._telemetry = telemetry
        self._clock = clock
        self._env = env
        self._apply = apply
        self._leading = False
        self._reconciled_at = float("-inf")
        ledger = coordinator.ledger
        self.keeper = None if ledger is None else BoardKeeper(config, ledger, clock)
        self._keep = None if self.keeper is None else OffLoop(executor, self.keeper.run)
        self._cleared = False
        self._base_seen: set[str] = set()      # base branch commits this clone is known to hold

    @property
    def local(self) -> bool:
        """Whether this node's own inbox/ is where tasks are asked: a fleet's leader reads the remote's."""
        return self.keeper is None

    def lead(self) -> bool:
        """Whether this node does the board's work this pass. In a fleet the leader's board work is the
        keeper's pass (off the loop), and this node's own inbox is never read: what was asked is on the
        remote."""
        leading = self.coordinator.is_leader()
        if not self.coordinator.shared:
            self._leading = leading
            return leading
        now = self._clock()
        if leading and (not self._leading or now - self._reconciled_at >= self._config().daemon.rescan_interval_s):
            self._reconciled_at = now
            self.coordinator.reconcile()
        if leading and self.keeper is not None and self._keep is not None and self.keeper.due():
            self._keep()
        self._leading = leading
        return leading

    @property
    def leading(self) -> bool:
        """Whether the last pass led: only a leading node runs the periodic jobs, so only its sleep should
        end when one is due (a follower woke every 10 ms for jobs it never runs: 8 % of a core each, idle)."""
        return self._leading

    def pull(self, free: int) -> int:
        """Lease up to `free` tasks from the fleet into the ready queue; returns how many."""
        if not self.coordinator.shared or free <= 0:
            return 0
        if not self._cleared and self.keeper is not None:
            self._clear_copies()
        taken = 0
        for grant in self.coordinator.take(free):
            path = self._layout.root / grant.path
            if grant.document is not None:
                self._place(grant.task_id, path, grant.document)
            if grant.base_tip is not None:
                self._catch_up(grant.base_tip)
            task = self._read(grant.task_id, path)
            if task is None:
                continue
            self._fetch_context_branch(task)
            if grant.takeover:
                self._fetch_branch(task)
                config = self._config()
                report = recovery.take_over(task, config, self._layout, self._telemetry, self._clock, self._env,
                                            self.coordinator)
                if report is not None:
                    self._apply(report)
                    continue
            why = self._not_runnable_here(task)
            if why is not None and self._give_back(task, why):
                continue
            self._ready.push(task, sig=signature(task.path))
            taken += 1
        return taken

    def _not_runnable_here(self, task: Task) -> str | None:
        """Why no route of the task can ever run on this node (its CLIs are not installed or not logged in
        here), or None. Another node may have them: on a single host this fails the task, in a fleet the
        task goes back to the fleet. A transient reason (a pause, a budget) is no reason: it holds fleet-wide."""
        try:
            routing = plan_routes(task, self._config(), RouteCheck(self._env))
        except ConveyorError:
            return None          # no route in the configuration: every node agrees, the pipeline fails it
        if routing.route is not None or routing.retry_at() is not None:
            return None
        return "; ".join(f"{skip.tool}: {skip.reason}" for skip in routing.skipped) or "no route"

    def _give_back(self, task: Task, why: str) -> bool:
        """Decline the task (another node takes it; this one is never granted it again). False when every
        other live node declined it too: it runs here, and fails saying why, as on a single host."""
        if not self.coordinator.decline(task.id):
            log.warning("fleet.no_node_can_run", task_id=task.id, agent=task.agent, reason=why)
            return False
        with contextlib.suppress(OSError):
            task.path.unlink()   # this clone's copy; the board branch keeps the task in assigned/
        log.warning("fleet.not_runnable_here", task_id=task.id, agent=task.agent, reason=why,
                    note="given back to the fleet; a node that has the CLI runs it")
        return True

    def _read(self, task_id: str, path: Path) -> Task | None:
        """The granted task's file; one that is gone or unreadable ends the task as an error (and a
        readable-but-invalid one goes to _rejected/ with its report)."""
        if not path.is_file():
            problem = "its file left assigned/ (moved or deleted by hand)"
            if self.coordinator.commit(task_id, "error", self._error_outcome(task_id, path, problem)):
                log.error("fleet.task_missing", task_id=task_id, file=str(path), problem=problem,
                          fix="submit the task again under a new id")
            return None
        try:
            return parse_task(path)
        except TaskFileError as exc:
            problem = "; ".join(p.render() for p in exc.problems)
            if self.coordinator.commit(task_id, "error", self._error_outcome(task_id, path, problem)):
                board.reject(self._layout, path, exc.problems, utc_iso(self._clock()))
                log.error("fleet.task_unreadable", task_id=task_id, file=str(path),
                          problems=[p.render() for p in exc.problems])
            return None

    def _error_outcome(self, task_id: str, path: Path, problem: str) -> Path | None:
        """The finished file of a task that could not even be read, for the board leader's done/ (the outcome
        is recorded with the fence: a row without one would be reopened and granted again for ever)."""
        outcome = self._layout.done / path.parent.name / f".{path.name}.outcome"
        try:
            outcome.parent.mkdir(parents=True, exist_ok=True)
            outcome.write_text(yamlio.dumps({
                "id": task_id, "status": "error", "completed_at": utc_iso(self._clock()),
                "error": {"message": problem, "kind": "unreadable", "timestamp": utc_iso(self._clock())}}),
                encoding="utf-8")
        except OSError as exc:
            log.error("fleet.outcome_unwritable", task_id=task_id, error=str(exc))
            return None
        return outcome

    def _clear_copies(self) -> None:
        """A new process of this node forgets the task copies an earlier one left in its clone's assigned/:
        their leases belonged to that process, and whichever node takes them gets the document again."""
        self._cleared = True
        for path in list(board.task_files(self._layout.assigned)):
            path.unlink(missing_ok=True)
            log.info("fleet.copy_forgotten", task_id=path.stem, file=str(path))

    def _place(self, task_id: str, path: Path, document: str) -> None:
        """The granted task's file in this node's own board folder, as the leader read it; a copy of an
        earlier run here (finished, or lost to another node) is replaced."""
        for folder in board.all_folders(self._layout):
            for suffix in (".yaml", ".yml"):
                stale = folder / f"{task_id}{suffix}"
                if stale != path:
                    stale.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.fleet")
        tmp.write_text(document, encoding="utf-8")
        tmp.replace(path)

    def _catch_up(self, tip: str) -> None:
        """Tasks start from the base branch as the leader saw it when they were asked: a clone that does not
        hold that commit yet fetches the base branch and fast-forwards to it (and its working tree, which
        holds the configuration). Asked once per commit; a failure is logged and the task starts anyway."""
        if tip in self._base_seen:
            return
        config = self._config()
        repo, base, remote = config.repo, config.daemon.base_branch, config.daemon.remote.name
        try:
            if not self._holds(repo, tip, base) and remote:
                tracking = f"refs/remotes/{remote}/{base}"
                git.run(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                        f"+refs/heads/{base}:{tracking}")
                if git.head_ref(repo) == f"refs/heads/{base}":
                    git.run(repo, "merge", "--ff-only", "--quiet", tracking)
                else:                         # a fast-forward only, never forced
                    git.run(repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                            f"refs/heads/{base}:refs/heads/{base}")
                log.info("fleet.base_updated", branch=base, tip=tip)
            if self._holds(repo, tip, base):
                self._base_seen.add(tip)
        except GitError as exc:
            log.warning("fleet.base_update_failed", branch=base, tip=tip, error=str(exc),
                        note="the task starts from this clone's base branch as it is")

    @staticmethod
    def _holds(repo: Path, tip: str, base: str) -> bool:
        try:
            git.run(repo, "merge-base", "--is-ancestor", tip, f"refs/heads/{base}")
            return True
        except GitError:
            return False

    def _fetch_context_branch(self, task: Task) -> None:
        """A hand-off starts from its parent's branch (`context.branch`), which another node may have made
        and pushed: this clone's copy is set to the remote's, the published work. (A copy of its own may be
        missing, or stale: a commit of a run here whose lease passed to another node, which re-ran and
        published the parent.) Task workspaces are repositories of their own, so no checkout holds it."""
        wanted = task.context.get("branch")
        config = self._config()
        remote = config.daemon.remote.name
        if not isinstance(wanted, str) or not wanted.startswith(BRANCH_PREFIX) or not remote \
                or SAFE_NAME.match(wanted.removeprefix(BRANCH_PREFIX)) is None or ".." in wanted:
            return   # only another task's branch, named as Conveyor names them (a task file is anyone's text)
        try:
            git.run(config.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                    f"+refs/heads/{wanted}:refs/heads/{wanted}")
            log.info("fleet.branch_fetched", task_id=task.id, branch=wanted, why="context.branch")
        except GitError as exc:   # not on the remote: the task starts from the base and its result says so
            log.warning("fleet.context_branch_missing", task_id=task.id, branch=wanted, error=str(exc))

    def _fetch_branch(self, task: Task) -> None:
        """A takeover: the dead node's pushed commit, if any, is on the remote; bring its task branch here
        (this node's worktree of an earlier run goes first: git would not update a checked-out branch)."""
        config = self._config()
        remote = config.daemon.remote.name
        if not remote:
            return
        branch = task_branch(task.id)
        with contextlib.suppress(GitError):
            for entry in git.list_worktrees(config.repo):
                if entry.branch == branch:
                    git.remove_worktree(config.repo, entry.path)
        try:
            git.run(config.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote,
                    f"+refs/heads/{branch}:refs/heads/{branch}")
            log.info("fleet.branch_fetched", task_id=task.id, branch=branch)
        except GitError:
            # not pushed: a commit of an earlier run here is still published; an empty branch goes
            with contextlib.suppress(GitError):
                if git.find_task_commit(config.repo, branch, task.id) is None:
                    git.delete_branch(config.repo, branch)
