"""A fleet's board as a branch of the remote, read and written without a checkout.

The board leader fetches the base branch (where people ask, in `inbox/`) and the board branch (where
Conveyor records moves) into private refs, builds the next board commit in a private index on top of the
fetched board tip, and pushes it as a fast-forward. A push the remote rejects (it moved: another leader,
or a person) leaves nothing behind: the caller fetches again and redoes its moves on the new tip. Nothing
here touches a working tree, the node's own branches, or the base branch, which is never pushed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.errors import GitError
from conveyor.workspace import git

BASE_REF = "refs/conveyor-fleet/base"
BOARD_REF = "refs/conveyor-fleet/board"
EPOCH_TRAILER = "Conveyor-Board-Epoch"
_REJECTED_PUSH = ("rejected", "non-fast-forward", "fetch first", "stale info", "cannot lock ref")
_NO_REF = "couldn't find remote ref"


@dataclass
class Draft:
    """The next board commit, in the making: `parent` is the fetched board tip (or the base branch's tip
    when the board branch does not exist yet)."""

    parent: str
    board_tip: str | None
    base_tip: str
    files: set[str] = field(default_factory=set)   # paths under the board folder in the draft
    changed: bool = False


class RemoteBoard:
    def __init__(self, repo: Path, remote: str, base: str, branch: str, index_file: Path) -> None:
        if branch.strip("/") == base:
            raise GitError(f"refusing to write the board to '{branch}': it is the base branch, which Conveyor "
                           "never pushes (set fleet.board_branch in daemon.yaml)")
        self.repo, self.remote, self.base, self.branch = repo, remote, base, branch
        self._env = {"GIT_INDEX_FILE": str(index_file), "GIT_LITERAL_PATHSPECS": "1"}
        index_file.parent.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- reading
    def fetch(self) -> None:
        """Both branches of the remote into private refs (a board branch not made yet is no error)."""
        base = f"+refs/heads/{self.base}:{BASE_REF}"
        try:
            git.run(self.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, base,
                    f"+refs/heads/{self.branch}:{BOARD_REF}")
        except GitError as exc:
            if _NO_REF not in str(exc) or f"refs/heads/{self.branch}" not in str(exc):
                raise
            git.run(self.repo, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote, base)
            git.run(self.repo, "update-ref", "-d", BOARD_REF)

    def draft(self, board_dir: str) -> Draft:
        """A private index holding the fetched board tip, ready for moves."""
        base_tip = git.rev_parse(self.repo, BASE_REF)
        if base_tip is None:
            raise GitError(f"the base branch '{self.base}' was not fetched from '{self.remote}'")
        board_tip = git.rev_parse(self.repo, BOARD_REF)
        parent = board_tip or base_tip
        self._git("read-tree", parent)
        return Draft(parent, board_tip, base_tip, set(self.list(parent, board_dir)))

    def list(self, rev: str, folder: str) -> list[str]:
        out = git.run(self.repo, "ls-tree", "-r", "-z", "--name-only", rev, "--", folder.rstrip("/") + "/")
        return [p for p in out.split("\0") if p]

    def read(self, rev: str, path: str) -> bytes:
        data = git.execute(self.repo, ["cat-file", "blob", f"{rev}:{path}"], raw=True)
        assert isinstance(data, bytes)
        return data

    def epoch_of(self, rev: str | None) -> int:
        """The leader epoch a board commit carries (0: none, e.g. the base branch's commit)."""
        if rev is None:
            return 0
        value = git.trailer(self.repo, rev, EPOCH_TRAILER)
        return int(value) if value and value.strip().isdigit() else 0

    # ---------------------------------------------------------------- writing
    def put(self, draft: Draft, path: str, data: bytes) -> None:
        blob = str(git.execute(self.repo, ["hash-object", "-w", "--stdin"], stdin=data)).strip()
        self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        draft.files.add(path)
        draft.changed = True

    def remove(self, draft: Draft, path: str) -> None:
        if path in draft.files:
            self._git("update-index", "--force-remove", "--", path)
            draft.files.discard(path)
            draft.changed = True

    def commit(self, draft: Draft, message: str, epoch: int, author: tuple[str, str]) -> str | None:
        """The draft as a commit on its parent (None: nothing changed)."""
        tree = self._git("write-tree").strip()
        if tree == git.run(self.repo, "rev-parse", f"{draft.parent}^{{tree}}").strip():
            return None
        name, email = author
        env = {**self._env, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
               "GIT_COMMITTER_EMAIL": email}
        text = f"{message.rstrip()}\n\n{EPOCH_TRAILER}: {epoch}\n"
        return str(git.execute(self.repo, ["commit-tree", tree, "-p", draft.parent], env=env,
                               stdin=text.encode("utf-8"))).strip()

    def push(self, sha: str) -> bool:
        """Fast-forward the remote's board branch to `sha`; False when the remote moved meanwhile."""
        try:
            git.run(self.repo, "push", "--quiet", "--no-verify", self.remote, f"{sha}:refs/heads/{self.branch}")
        except GitError as exc:
            if any(word in str(exc) for word in _REJECTED_PUSH):
                return False
            raise
        git.run(self.repo, "update-ref", BOARD_REF, sha)
        return True

    def _git(self, *args: str) -> str:
        return str(git.execute(self.repo, list(args), env=self._env))
