"""The one module that owns git; the only importer of GitPython.

GitPython's README warns that it leaks resources in long-running processes, so every function opens a
`Repo` for one operation and closes it. Every command runs with hooks disabled (`core.hooksPath=/dev/null`:
a commit made for an agent never runs the repository's hooks) and without signing prompts, and git's
failures become sentences a user can act on.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

from conveyor.errors import GitError

_SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "core.quotepath=false",
                "-c", "advice.detachedHead=false", "-c", "gc.auto=0")
_SCRUBBED_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GIT_EDITOR": "true"}


@contextlib.contextmanager
def open_repo(path: Path) -> Iterator[gitpython.Repo]:
    """A Repo for one operation, always closed (GitPython leaks file handles otherwise)."""
    try:
        repo = gitpython.Repo(path)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
        raise GitError(f"{path} is not a git repository; run `git init` there or pass --repo") from exc
    try:
        yield repo
    finally:
        repo.close()


def run(path: Path, *args: str) -> str:
    """Run one git command in `path` via GitPython, hooks off; raise GitError with git's own words."""
    with open_repo(path) as repo:
        return _execute(repo, list(args))


def _execute(repo: gitpython.Repo, args: list[str]) -> str:
    repo.git.update_environment(**_SCRUBBED_ENV)
    try:
        out = repo.git.execute(["git", *_SAFE_CONFIG, *args])
    except gitpython.GitCommandError as exc:
        stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
        raise GitError(f"git {args[0]} failed in {repo.working_dir}: {stderr or exc}") from exc
    return str(out)


def version() -> tuple[int, ...]:
    """The installed git's version, e.g. (2, 39, 5)."""
    try:
        return tuple(int(part) for part in gitpython.Git().version_info)
    except (gitpython.GitCommandError, OSError, ValueError) as exc:
        raise GitError(f"git is not runnable ({exc})") from exc


def repo_root(start: Path) -> Path:
    """The top of the working tree containing `start`."""
    try:
        with open_repo_search(start) as repo:
            if repo.working_tree_dir is None:
                raise GitError(f"{start} is a bare repository; Conveyor needs a working tree")
            return Path(repo.working_tree_dir)
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError) as exc:
        raise GitError(f"{start} is not inside a git repository; run `git init` or pass --repo") from exc


@contextlib.contextmanager
def open_repo_search(start: Path) -> Iterator[gitpython.Repo]:
    repo = gitpython.Repo(start, search_parent_directories=True)
    try:
        yield repo
    finally:
        repo.close()


def common_git_dir(repo: Path) -> Path:
    """The shared .git directory (the same for every worktree): home of the lock and the state."""
    out = run(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(out.strip())


def branch_exists(repo: Path, branch: str) -> bool:
    with open_repo(repo) as handle:
        return f"refs/heads/{branch}" in {ref.path for ref in handle.references}


def rev_parse(repo: Path, ref: str) -> str | None:
    try:
        return run(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip() or None
    except GitError:
        return None


def base_not_ready(repo: Path, base: str, git_dir: Path) -> str | None:
    """Why tasks cannot branch from `base` right now (a sentence with what to do), or None when fine.

    The user's working tree state (dirty, detached HEAD) does not matter: task branches start from the
    base branch's ref in worktrees of their own. A missing base branch or a rebase rewriting it does.
    """
    if rev_parse(repo, f"refs/heads/{base}") is None:
        return (f"the base branch '{base}' does not exist; create it (git branch {base}) or set "
                f"base_branch in config/daemon.yaml")
    for marker in ("rebase-merge", "rebase-apply"):
        head_name = git_dir / marker / "head-name"
        with contextlib.suppress(OSError):
            if head_name.read_text().strip() == f"refs/heads/{base}":
                return f"'{base}' is being rebased; finish or abort the rebase (git rebase --continue/--abort)"
    return None


def add_worktree(repo: Path, path: Path, branch: str, base: str) -> None:
    """A fresh worktree at `path` on `branch`, (re)created from `base`; leftovers are cleared first."""
    if path.exists() or _worktree_registered(repo, path):
        remove_worktree(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run(repo, "worktree", "add", "--force", "-B", branch, str(path), f"refs/heads/{base}")


def _worktree_registered(repo: Path, path: Path) -> bool:
    return any(entry.path == path for entry in list_worktrees(repo))


@dataclass(frozen=True)
class WorktreeEntry:
    path: Path
    branch: str | None


def list_worktrees(repo: Path) -> list[WorktreeEntry]:
    entries: list[WorktreeEntry] = []
    current: Path | None = None
    branch: str | None = None
    for line in [*run(repo, "worktree", "list", "--porcelain").splitlines(), ""]:
        if line.startswith("worktree "):
            current = Path(line.removeprefix("worktree "))
        elif line.startswith("branch "):
            branch = line.removeprefix("branch refs/heads/")
        elif not line and current is not None:
            entries.append(WorktreeEntry(current, branch))
            current, branch = None, None
    return entries


def remove_worktree(repo: Path, path: Path) -> None:
    """Remove a worktree even if it is dirty or already half gone; never fails on a missing one."""
    with contextlib.suppress(GitError):
        run(repo, "worktree", "remove", "--force", "--force", str(path))
    if path.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(GitError):
        run(repo, "worktree", "prune")


def stage_all(worktree: Path) -> list[str]:
    """Stage every change the agent made (respecting .gitignore); return the changed paths."""
    run(worktree, "add", "--all")
    out = run(worktree, "diff", "--cached", "--name-only", "-z", "--no-renames")
    return [name for name in out.split("\0") if name]


def staged_diff(worktree: Path) -> str:
    """The staged change as a unified diff without context, for the secret scan."""
    return run(worktree, "diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-renames")


def commit(worktree: Path, message: str, author_name: str, author_email: str) -> str:
    """Commit what is staged with the given identity (hooks off); return the new commit's sha."""
    with open_repo(worktree) as repo:
        repo.git.update_environment(GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email,
                                    GIT_COMMITTER_NAME=author_name, GIT_COMMITTER_EMAIL=author_email)
        _execute(repo, ["commit", "--quiet", "--no-verify", "--cleanup=verbatim", "-m", message])
        return str(repo.head.commit.hexsha)


def delete_branch(repo: Path, branch: str) -> None:
    with contextlib.suppress(GitError):
        run(repo, "branch", "-D", branch)


def find_task_commit(repo: Path, branch: str, task_id: str) -> str | None:
    """The commit on `branch` whose trailer says `Conveyor-Task: <task_id>`, if any."""
    if rev_parse(repo, f"refs/heads/{branch}") is None:
        return None
    out = run(repo, "log", "--format=%H%x00%(trailers:key=Conveyor-Task,valueonly)%x1e", "-n", "20",
              f"refs/heads/{branch}")
    for record in out.split("\x1e"):
        sha, _, trailer = record.strip().partition("\0")
        if sha and trailer.strip() == task_id:
            return sha
    return None


def is_merged(repo: Path, branch: str, base: str) -> bool:
    """Whether the tip of `branch` is reachable from `base` (merged locally)."""
    tip = rev_parse(repo, f"refs/heads/{branch}")
    if tip is None:
        return False
    try:
        run(repo, "merge-base", "--is-ancestor", tip, f"refs/heads/{base}")
    except GitError:
        return False
    return True


def remote_url(repo: Path, remote: str) -> str | None:
    try:
        return run(repo, "remote", "get-url", remote).strip() or None
    except GitError:
        return None


def push(repo: Path, remote: str, branch: str) -> None:
    """Push the task branch (never the base branch) to `remote`, replacing an older push of it."""
    if not re.match(r"conveyor/", branch):
        raise GitError(f"refusing to push '{branch}': only conveyor/* task branches are pushed")
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    run(repo, "push", "--force-with-lease", "--no-verify", "--quiet", remote, refspec)


def scrub_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Drop inherited GIT_* variables (set by hooks or wrappers) that would redirect our git commands."""
    for name in [key for key in environ if key.startswith("GIT_")]:
        del environ[name]
