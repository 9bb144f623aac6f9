"""A fleet's board as a branch of the remote, read and written without a checkout.

The board leader fetches the base branch (where people ask, in `inbox/`) and the board branch (where
Conveyor records moves) into private refs, builds the next board commit in a private index on top of the
fetched board tip, and pushes it as a fast-forward. A push the remote rejects (it moved: another leader,
or a person) leaves nothing behind: the caller fetches again and redoes its moves on the new tip. Nothing
here touches a working tree, the node's own branches, or the base branch, which is never pushed.
"""

from __future__ import annotations

import tempfile
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
    files: dict[str, str] = field(default_factory=dict)   # path under the board folder → blob, in the draft
    changed: bool = False
    _blobs: dict[str, str | None] = field(default_factory=dict)   # path → blob (None: removed), to write
    _data: dict[str, bytes] = field(default_factory=dict)          # path → content still to be hashed


class RemoteBoard:
    def __init__(self, repo: Path, remote: str, base: str, branch: str, index_file: Path) -> None:
        if branch.strip("/") == base:
            raise GitError(f"refusing to write the board to '{branch}': it is the base branch, which Conveyor "
                           "never pushes (set fleet.board_branch in daemon.yaml)")
        self.repo, self.remote, self.base, self.branch = repo, remote, base, branch
        self._env = {"GIT_INDEX_FILE": str(index_file)}
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

    def tips(self) -> tuple[str | None, str | None]:
        """The remote's base and board branch tips, asked without fetching (one cheap command): a leader
        pass with nothing new on either and no outcome to write is skipped."""
        out = git.run(self.repo, "ls-remote", "--heads", self.remote, f"refs/heads/{self.base}",
                      f"refs/heads/{self.branch}")
        found: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            found[ref] = sha
        return found.get(f"refs/heads/{self.base}"), found.get(f"refs/heads/{self.branch}")

    def draft(self, board_dir: str) -> Draft:
        """The next commit's starting point: the fetched board tip and what its board folder holds."""
        base_tip = git.rev_parse(self.repo, BASE_REF)
        if base_tip is None:
            raise GitError(f"the base branch '{self.base}' was not fetched from '{self.remote}'")
        board_tip = git.rev_parse(self.repo, BOARD_REF)
        parent = board_tip or base_tip
        return Draft(parent, board_tip, base_tip, self.entries(parent, board_dir))

    def entries(self, rev: str, folder: str) -> dict[str, str]:
        """Files under `folder` at `rev`: path → blob id (one git command however many there are)."""
        out = git.run(self.repo, "ls-tree", "-r", "-z", rev, "--", folder.rstrip("/") + "/")
        found = {}
        for record in out.split("\0"):
            meta, _, path = record.partition("\t")
            parts = meta.split()
            if path and len(parts) == 3 and parts[1] == "blob":
                found[path] = parts[2]
        return found

    def read_blobs(self, blobs: list[str]) -> dict[str, bytes]:
        """Several blobs' contents in one `cat-file --batch`."""
        if not blobs:
            return {}
        raw = git.execute(self.repo, ["cat-file", "--batch"], raw=True, stdin="".join(f"{b}\n" for b in blobs).encode())
        assert isinstance(raw, bytes)
        found, at = {}, 0
        while at < len(raw):
            header_end = raw.index(b"\n", at)
            header = raw[at:header_end].split()
            if len(header) < 3:       # "<id> missing"
                at = header_end + 1
                continue
            size = int(header[2])
            found[header[0].decode()] = raw[header_end + 1: header_end + 1 + size]
            at = header_end + 1 + size + 1
        return found

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
        """`path` holds `data` in the next commit (hashed with the others at commit time)."""
        draft._data[path] = data
        draft._blobs.pop(path, None)
        draft.files[path] = ""
        draft.changed = True

    def put_blob(self, draft: Draft, path: str, blob: str) -> None:
        """`path` holds an existing blob (a task file moved unchanged)."""
        draft._blobs[path] = blob
        draft._data.pop(path, None)
        draft.files[path] = blob
        draft.changed = True

    def remove(self, draft: Draft, path: str) -> None:
        if path in draft.files:
            draft._blobs[path] = None
            draft._data.pop(path, None)
            del draft.files[path]
            draft.changed = True

    def commit(self, draft: Draft, message: str, epoch: int, author: tuple[str, str]) -> str | None:
        """The draft as a commit on its parent (None: nothing changed); a handful of git commands in all."""
        blobs = dict(draft._blobs)
        blobs.update(self._hash(draft._data))
        self._git("read-tree", draft.parent)
        lines = [f"100644 blob {blob}\t{path}" if blob else f"0 {'0' * 40}\t{path}" for path, blob in blobs.items()]
        if lines:
            git.execute(self.repo, ["update-index", "-z", "--index-info"], env=self._env,
                        stdin="".join(f"{line}\0" for line in lines).encode("utf-8"))
        tree = self._git("write-tree").strip()
        if tree == git.run(self.repo, "rev-parse", f"{draft.parent}^{{tree}}").strip():
            return None
        name, email = author
        env = {**self._env, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
               "GIT_COMMITTER_EMAIL": email}
        text = f"{message.rstrip()}\n\n{EPOCH_TRAILER}: {epoch}\n"
        return str(git.execute(self.repo, ["commit-tree", tree, "-p", draft.parent], env=env,
                               stdin=text.encode("utf-8"))).strip()

    def _hash(self, data: dict[str, bytes]) -> dict[str, str]:
        """Write new contents as blobs, all in one `hash-object`."""
        if not data:
            return {}
        with tempfile.TemporaryDirectory(prefix="conveyor-board-") as folder:
            files = []
            for number, content in enumerate(data.values()):
                file = Path(folder) / str(number)
                file.write_bytes(content)
                files.append(str(file))
            out = git.run(self.repo, "hash-object", "-w", "--no-filters", "--", *files)
        return dict(zip(data, out.split(), strict=True))

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
