"""A fleet's git side for tests and the bench: one bare remote, a clone per node, a person who asks by
pushing task files to the base branch's inbox/, and the board read back from the board branch."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

BOARD = "work/collaboration"


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


class GitFleet:
    """`person` is the repository people ask in (a clone of `remote`); `clone(name)` is a node's clone."""

    def __init__(self, person: Path, root: Path, board_branch: str = "conveyor/board") -> None:
        self.person = person
        self.root = root
        self.remote = root / "remote.git"
        self.board_branch = board_branch
        if not self.remote.exists():
            git(root, "init", "-q", "--bare", "-b", "main", str(self.remote))
            if "origin" not in git(person, "remote").split():
                git(person, "remote", "add", "origin", str(self.remote))
            git(person, "push", "-q", "origin", "main")

    def publish_config(self, message: str = "fleet configuration") -> None:
        git(self.person, "add", "-A", "config")
        git(self.person, "commit", "-q", "-m", message)
        git(self.person, "push", "-q", "origin", "main")

    def clone(self, name: str) -> Path:
        path = self.root / f"node-{name}"
        if not path.exists():
            git(self.root, "clone", "-q", str(self.remote), str(path))
        return path

    def ask(self, documents: list[dict[str, Any]], raw: dict[str, str] | None = None) -> None:
        """Task files into the base branch's inbox/, one commit pushed (as a person would)."""
        inbox = self.person / BOARD / "inbox"
        for document in documents:
            (inbox / f"{document['id']}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        for name, text in (raw or {}).items():
            (inbox / name).write_text(text)
        git(self.person, "add", "-A", f"{BOARD}/inbox")
        git(self.person, "commit", "-q", "-m", f"ask {len(documents) + len(raw or {})} tasks")
        for _ in range(5):
            try:
                git(self.person, "push", "-q", "origin", "main")
                return
            except RuntimeError:
                git(self.person, "pull", "-q", "--rebase", "origin", "main")
        git(self.person, "push", "-q", "origin", "main")

    # ---------------------------------------------------------------- the board branch
    def board_files(self) -> list[str]:
        """Paths under the board folder on the board branch ([] before its first push)."""
        try:
            out = git(self.remote, "ls-tree", "-r", "--name-only", self.board_branch, "--", BOARD + "/")
        except RuntimeError:
            return []
        return [line.removeprefix(BOARD + "/") for line in out.splitlines() if line]

    def done_ids(self) -> set[str]:
        return {Path(p).stem for p in self.board_files() if p.startswith("done/") and p.endswith(".yaml")}

    def board_doc(self, path: str) -> dict[str, Any]:
        document = yaml.safe_load(git(self.remote, "show", f"{self.board_branch}:{BOARD}/{path}"))
        assert isinstance(document, dict)
        return document

    def done_doc(self, task_id: str, agent: str = "backend-dev") -> dict[str, Any]:
        return self.board_doc(f"done/{agent}/{task_id}.yaml")

    def branch_commits(self, task_id: str) -> int:
        """Commits on the remote's task branch that the base branch does not have."""
        return len(git(self.remote, "rev-list", f"main..conveyor/{task_id}").split())

    def branch_head(self, task_id: str) -> str:
        return git(self.remote, "rev-parse", f"conveyor/{task_id}")

    def board_head(self) -> str:
        return git(self.remote, "rev-parse", self.board_branch)

    def base_head(self) -> str:
        return git(self.remote, "rev-parse", "main")
