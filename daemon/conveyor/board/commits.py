"""`commit_board: true`: the board's history in git, without touching anything else of the user's.

Each loop pass that moved tasks makes at most one commit on the base branch, holding only the board
folder and ROADMAP.md as they are in the working tree. The commit is built in a private index and the
branch moves by compare-and-swap (`git.commit_paths`), so the user's staged changes are never read or
committed. When the user has the base branch checked out, their index is then reset for those paths
alone, so `git status` shows neither the board as staged-for-revert nor any change to their own staging.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from conveyor.config import Config
from conveyor.core.errors import GitError
from conveyor.workspace import git

log = structlog.get_logger("conveyor.board.commits")
INDEX_FILE = "board.index"
SUBJECT_LIMIT = 72


@dataclass
class BoardCommitter:
    config: Config
    _events: list[str] = field(default_factory=list)
    _index_tip: str | None = None
    _index_sync_pending: bool = False
    _dirty: bool = False

    @property
    def enabled(self) -> bool:
        return self.config.daemon.commit_board

    @property
    def paths(self) -> list[str]:
        paths = [self.config.daemon.board_dir.strip("/")]
        if self.config.daemon.roadmap.enabled:
            paths.append(self.config.daemon.roadmap.file)
        return paths

    def note(self, event: str, task_id: str) -> None:
        """Remember a transition for the next commit's message."""
        if self.enabled:
            self._events.append(f"{event} {task_id}")
            self._dirty = True

    def touch(self) -> None:
        """The board changed without a task moving (AGENT_STATUS.md was regenerated)."""
        self._dirty = self.enabled

    def commit(self) -> str | None:
        """Commit pending board changes (one commit for everything since the last one); returns its sha."""
        if not self.enabled or not (self._dirty or self._index_sync_pending):
            return None
        sha = None
        if self._dirty:
            sha = self._commit()
        if self._index_sync_pending:
            self._sync_user_index()
        return sha

    def _commit(self) -> str | None:
        config = self.config
        index_file = config.state_dir / INDEX_FILE
        try:
            index_file.parent.mkdir(parents=True, exist_ok=True)
            done = git.commit_paths(config.repo, config.daemon.base_branch, self.paths, self._message(),
                                    author_name=config.daemon.commit.author_name,
                                    author_email=config.daemon.commit.author_email,
                                    index_file=index_file, index_tip=self._index_tip)
        except (GitError, OSError) as exc:
            log.warning("board_commit.failed", error=str(exc), note="tried again after the next transition")
            self._index_tip = None
            with contextlib.suppress(FileNotFoundError):
                Path(f"{index_file}.lock").unlink()
            return None
        self._events.clear()
        self._dirty = False
        self._index_tip = done.tip
        if done.commit is not None:
            log.info("board_commit.done", commit=done.commit, branch=config.daemon.base_branch)
            self._index_sync_pending = True
        return done.commit

    def _message(self) -> str:
        counts: dict[str, int] = {}
        for line in self._events:
            event = line.split(" ", 1)[0]
            counts[event] = counts.get(event, 0) + 1
        summary = ", ".join(f"{event} {count}" for event, count in counts.items()) or "status files"
        subject = f"chore(conveyor): board: {summary}"
        if len(subject) > SUBJECT_LIMIT:
            subject = subject[: SUBJECT_LIMIT - 1] + "…"
        body = "\n".join(f"- {line}" for line in self._events[:200])
        more = f"\n- … and {len(self._events) - 200} more" if len(self._events) > 200 else ""
        return f"{subject}\n\n{body}{more}\n"

    def _sync_user_index(self) -> None:
        """Only when the user's HEAD is the base branch: their index entries for board paths follow it."""
        config = self.config
        if git.head_ref(config.repo) != f"refs/heads/{config.daemon.base_branch}":
            self._index_sync_pending = False
            return
        try:
            git.reset_index_paths(config.repo, self.paths)
        except GitError as exc:   # e.g. the user's own git holds index.lock right now
            log.warning("board_commit.index_sync_failed", error=str(exc), note="retried on the next pass")
            return
        self._index_sync_pending = False
