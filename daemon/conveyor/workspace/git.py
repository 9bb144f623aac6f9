"""The one module that owns git; the only importer of GitPython.

GitPython's README warns that it leaks resources in long-running processes, so every function opens a
`Repo` for one operation and closes it. Every command runs with hooks disabled (`core.hooksPath=/dev/null`:
a commit made for an agent never runs the repository's hooks) and without signing prompts, and git's
failures become sentences a user can act on.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from conveyor.core.errors import GitError


def _lazy_module(name: str) -> ModuleType:
    """Import `name` on first attribute use (the stdlib `LazyLoader` recipe).

    GitPython costs ~60 ms to import; `conveyor stats`, `status` and `task validate` only ask git for the
    repository root, so they should not pay for the whole library before their first line of output.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"{name} is not installed; reinstall Conveyor with its dependencies")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import git as gitpython
else:
    gitpython = _lazy_module("git")

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
    """Run one git command in `path` via GitPython, hooks off; raise GitError with git's own words.

    A bare `Git` command object is enough to run a command; building a whole `Repo` (which reads the
    configuration and discovers the git dir) for each of a task's dozen commands cost more than some of
    the commands themselves.
    """
    return str(_execute(_command(path), list(args)))


def _command(path: Path) -> gitpython.Git:
    command = gitpython.Git(str(path))
    command.update_environment(**_SCRUBBED_ENV)
    return command


def _execute(command: gitpython.Git, args: list[str], *, raw: bool = False) -> str | bytes:
    try:
        out = command.execute(["git", *_SAFE_CONFIG, *args], stdout_as_string=not raw,
                              strip_newline_in_stdout=not raw)
    except gitpython.GitCommandError as exc:
        stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip(" '\n")
        if "not a git repository" in stderr:
            raise GitError(f"{command.working_dir} is not a git repository; run `git init` there or pass "
                           "--repo") from exc
        raise GitError(f"git {args[0]} failed in {command.working_dir}: {stderr or exc}") from exc
    except OSError as exc:   # the folder vanished or is not reachable
        raise GitError(f"git {args[0]} cannot run in {command.working_dir}: {exc.strerror or exc}") from exc
    return out if isinstance(out, bytes | str) else str(out)


def version() -> tuple[int, ...]:
    """The installed git's version, e.g. (2, 39, 5)."""
    try:
        return tuple(int(part) for part in gitpython.Git().version_info)
    except (gitpython.GitCommandError, OSError, ValueError) as exc:
        raise GitError(f"git is not runnable ({exc})") from exc


def _rev_parse(start: Path, *args: str) -> list[str]:
    """`git rev-parse ARGS` in `start`, one output line per answer.

    A plain subprocess rather than GitPython: finding the repository is the first thing every command
    does, and the read-only ones (`stats`, `status`, `task validate`) should not import GitPython (~60 ms)
    just for this.
    """
    try:
        done = subprocess.run(["git", *_SAFE_CONFIG, "rev-parse", *args], cwd=start, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, env={**os.environ, **_SCRUBBED_ENV},
                              check=False)
    except OSError as exc:   # the folder is missing, or git is not installed
        raise GitError(f"{start} is not inside a git repository ({exc.strerror or exc}); run `git init` or "
                       "pass --repo") from exc
    lines = done.stdout.splitlines()
    if lines[:1] == ["true"] and args[:1] == ("--is-bare-repository",):
        raise GitError(f"{start} is a bare repository; Conveyor needs a working tree")
    if done.returncode != 0 or not lines:
        if "not a git repository" in done.stderr or not lines:
            raise GitError(f"{start} is not inside a git repository; run `git init` or pass --repo")
        raise GitError(f"git rev-parse failed in {start}: {done.stderr.strip()}")
    return lines


def repo_root(start: Path) -> Path:
    """The top of the working tree containing `start`."""
    return Path(_rev_parse(start, "--is-bare-repository", "--show-toplevel")[1])


def common_git_dir(repo: Path) -> Path:
    """The shared .git directory (the same for every worktree): home of the lock and the state."""
    return _common_git_dir(str(repo))


@functools.lru_cache(maxsize=256)
def _common_git_dir(repo: str) -> Path:
    """Memoised: a checkout's git dir does not move while we run, and each task asked twice per worktree."""
    return Path(_rev_parse(Path(repo), "--path-format=absolute", "--git-common-dir")[0])


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
    admin_dirs = [git_dir, *_linked_admin_dirs(git_dir)]   # a rebase in a linked worktree counts too
    for marker in ("rebase-merge", "rebase-apply"):
        for admin in admin_dirs:
            with contextlib.suppress(OSError):
                if (admin / marker / "head-name").read_text().strip() == f"refs/heads/{base}":
                    return (f"'{base}' is being rebased; finish or abort the rebase "
                            "(git rebase --continue/--abort)")
    return None


@contextlib.contextmanager
def _worktree_lock(repo: Path) -> Iterator[None]:
    """Worker threads take turns at `git worktree add/remove/prune`: run at once, git reads or prunes the
    half-written admin folder of another worktree ("failed to read .git/worktrees/<x>/commondir")."""
    fd = os.open(common_git_dir(repo) / "conveyor-worktrees.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _linked_admin_dirs(git_dir: Path) -> list[Path]:
    """The admin folders of linked worktrees; git removes the whole `worktrees/` folder with the last one,
    possibly while we list it (a task finishing in another thread), so a vanished folder means none."""
    try:
        with os.scandir(git_dir / "worktrees") as entries:
            return [Path(entry.path) for entry in entries]
    except OSError:
        return []


def add_worktree(repo: Path, path: Path, branch: str, base: str) -> None:
    """A fresh worktree at `path` on `branch`, (re)created from `base`; leftovers are cleared first."""
    with _worktree_lock(repo):
        if path.exists():
            _remove_worktree(repo, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        add = ["worktree", "add", "--force", "-B", branch, str(path), f"refs/heads/{base}"]
        try:
            run(repo, *add)   # --force also takes over a path still registered but missing
        except GitError:
            _remove_worktree(repo, path)   # a stale registration or half-made folder: clear it, try once more
            run(repo, *add)


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
    with _worktree_lock(repo):
        _remove_worktree(repo, path)


def _remove_worktree(repo: Path, path: Path) -> None:
    try:
        run(repo, "worktree", "remove", "--force", "--force", str(path))
        if not path.exists():
            return   # git removed the folder and its registration: nothing left to prune
    except GitError:
        pass
    if path.exists():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(GitError):
        run(repo, "worktree", "prune")


@dataclass(frozen=True)
class StagedChange:
    """What the agent changed, staged: the paths, and the diff the secret scan reads (see staged_diff_bytes)."""

    paths: list[str]
    diff: bytes


def stage_change(worktree: Path) -> StagedChange:
    """Stage every change the agent made (respecting .gitignore); return its paths and its diff.

    One `git diff` serves both: the paths come from its `diff --git a/X b/X` headers (with --no-renames
    both sides name the same path). Only a name git had to quote (a quote, backslash or control
    character in it) sends us to a second, `--name-only -z` call.
    """
    run(worktree, "add", "--all")
    diff = staged_diff_bytes(worktree)
    paths = _paths_of(diff)
    if paths is None:
        out = run(worktree, "diff", "--cached", "--name-only", "-z", "--no-renames")
        paths = [name for name in out.split("\0") if name]
    return StagedChange(paths, diff)


def stage_all(worktree: Path) -> list[str]:
    """Stage every change the agent made; return the changed paths."""
    return stage_change(worktree).paths


def _paths_of(diff: bytes) -> list[str] | None:
    """Paths named by the headers of a `--no-renames` diff with a/ b/ prefixes; None if any was quoted."""
    paths: list[str] = []
    for line in diff.split(b"\n"):
        if not line.startswith(b"diff --git "):
            continue
        rest = line[len(b"diff --git "):].decode("utf-8", "surrogateescape")
        half, odd = divmod(len(rest) - len("a/ b/"), 2)
        name = rest[2:2 + half]
        if odd or not rest.startswith("a/") or rest[2 + half:] != f" b/{name}":
            return None
        paths.append(name)
    return paths


def staged_diff(worktree: Path) -> str:
    """The staged change as a unified diff without context, for the secret scan."""
    return run(worktree, "diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-renames")


def staged_diff_bytes(worktree: Path) -> bytes:
    """The staged change as raw bytes for the secret scan: added lines exactly as written.

    Prefixes are explicit (`a/`, `b/`) so a user's `diff.noprefix` or `diff.mnemonicPrefix` cannot change
    how the scanner reads file names; `--text` shows files git would call binary (a `-diff` attribute the
    agent wrote into .gitattributes must not hide a key); `--no-textconv` and `--no-ext-diff` keep
    configured programs out of it.
    """
    args = ["diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", "--text",
            "--src-prefix=a/", "--dst-prefix=b/"]
    out = _execute(_command(worktree), args, raw=True)
    return out if isinstance(out, bytes) else out.encode()


def index_tree(worktree: Path) -> str:
    """The tree of what is staged now: the review stage diffs a later round against the tree it reviewed."""
    return run(worktree, "write-tree").strip()


def review_diff(worktree: Path, since: str | None = None) -> str:
    """The staged change with context, for a reviewer: against HEAD (the base), or against the tree `since`.

    Same safety flags as the secret scan's diff: no external diff or textconv programs, fixed prefixes."""
    args = ["diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
            "--src-prefix=a/", "--dst-prefix=b/"]
    if since is not None:
        args.append(since)
    return run(worktree, *args)


def staged_line_counts(worktree: Path) -> list[tuple[int, int, str]]:
    """(added, deleted, path) of each staged file; a binary file counts as 0 lines."""
    out = run(worktree, "diff", "--cached", "--numstat", "-z", "--no-renames")
    counts = []
    for record in out.split("\0"):
        added, _, rest = record.partition("\t")
        deleted, _, path = rest.partition("\t")
        if path:
            counts.append((int(added) if added.isdigit() else 0, int(deleted) if deleted.isdigit() else 0, path))
    return counts


def has_changes(worktree: Path) -> bool:
    """Whether the worktree differs from its HEAD in any file git would stage (ignored files do not count)."""
    return bool(run(worktree, "status", "--porcelain", "--untracked-files=all").strip())


def changed_files(repo: Path, base: str, ref: str) -> list[str]:
    """Paths `ref` changes relative to where it left `base` (`base...ref`), for a pull request's file list."""
    out = run(repo, "diff", "--name-only", "-z", "--no-renames", f"{base}...{ref}")
    return [name for name in out.split("\0") if name]


def message_of(repo: Path, sha: str) -> str:
    """The full message of commit `sha`."""
    return run(repo, "log", "-1", "--format=%B", sha)


def trailer(repo: Path, sha: str, key: str) -> str | None:
    """The value of trailer `key` in commit `sha`'s message, if it has one."""
    out = run(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha).strip()
    return out.splitlines()[0].strip() if out else None


def commit(worktree: Path, message: str, author_name: str, author_email: str) -> str:
    """Commit what is staged with the given identity (hooks off); return the new commit's sha."""
    command = _command(worktree)
    command.update_environment(GIT_AUTHOR_NAME=author_name, GIT_AUTHOR_EMAIL=author_email,
                               GIT_COMMITTER_NAME=author_name, GIT_COMMITTER_EMAIL=author_email)
    _execute(command, ["commit", "--quiet", "--no-verify", "--cleanup=verbatim", "-m", message])
    with open_repo(worktree) as repo:
        # Read the new sha from the refs (files), not via `head.commit`, which starts a `git cat-file`.
        return str(gitpython.SymbolicReference.dereference_recursive(repo, "HEAD"))


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


def head_ref(repo: Path) -> str | None:
    """The ref the working tree's HEAD points to (`refs/heads/main`), or None when HEAD is detached."""
    try:
        return run(repo, "symbolic-ref", "-q", "HEAD").strip() or None
    except GitError:
        return None


@dataclass(frozen=True)
class PathsCommit:
    """What `commit_paths` did: the new commit (None when the paths were unchanged) and the branch tip."""

    commit: str | None
    tip: str


def _run_with_env(repo: Path, env: dict[str, str], *args: str) -> str:
    command = _command(repo)
    command.update_environment(GIT_LITERAL_PATHSPECS="1", **env)
    return str(_execute(command, list(args)))


def commit_paths(repo: Path, branch: str, paths: list[str], message: str, *, author_name: str,
                 author_email: str, index_file: Path, index_tip: str | None = None) -> PathsCommit:
    """Commit the working tree's state of `paths` (only those) on top of `branch`, without a checkout.

    The commit is built in a private index (`index_file`), so the user's index, staged changes and other
    files are never read or written; `index_tip` says which tip that index already holds (its stat cache
    then makes `add` cheap). The branch moves with a compare-and-swap `update-ref`: if anyone moved it
    meanwhile, GitError, and the caller tries again from the new tip.
    """
    old = rev_parse(repo, f"refs/heads/{branch}")
    if old is None:
        raise GitError(f"cannot commit the board: branch '{branch}' does not exist")
    env = {"GIT_INDEX_FILE": str(index_file), "GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
           "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
    if index_tip != old or not index_file.exists():
        _run_with_env(repo, env, "read-tree", old)
    present = [p for p in paths if os.path.lexists(repo / p)
               or _run_with_env(repo, env, "ls-files", "--", p).strip()]
    if present:
        _run_with_env(repo, env, "add", "--all", "--", *present)
    tree = _run_with_env(repo, env, "write-tree").strip()
    if tree == run(repo, "rev-parse", f"{old}^{{tree}}").strip():
        return PathsCommit(None, old)
    sha = _run_with_env(repo, env, "commit-tree", tree, "-p", old, "-m", message).strip()
    _run_with_env(repo, env, "update-ref", "-m", "conveyor: board", f"refs/heads/{branch}", sha, old)
    return PathsCommit(sha, sha)


def reset_index_paths(repo: Path, paths: list[str]) -> None:
    """Make the user's index match HEAD for `paths` only (after HEAD's branch moved under it); their other
    staged changes stay staged and no file in the working tree changes."""
    _run_with_env(repo, {}, "reset", "-q", "--", *paths)


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


def clear_task_ref_locks(git_dir: Path, namespace: str = "conveyor") -> tuple[list[Path], list[Path]]:
    """Remove the ref locks a killed git command left on task branches (`refs/heads/<namespace>/...lock`).

    Only Conveyor writes those refs and the caller holds the daemon lock, so such a lock is stale; left in
    place it would fail every later run of that task ("cannot lock ref"). Returns (removed, other stale-
    looking locks): locks elsewhere (`packed-refs.lock`, the user's branches) may belong to a git command
    the user is running right now, so they are only reported.
    """
    ours = git_dir / "refs" / "heads" / namespace
    removed = []
    for lock in (sorted(ours.rglob("*.lock")) if ours.is_dir() else []):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            removed.append(lock)
    others = [lock for lock in (git_dir / "refs").rglob("*.lock") if not lock.is_relative_to(ours)]
    others += [lock for lock in (git_dir / "packed-refs.lock", git_dir / "index.lock") if lock.exists()]
    return removed, sorted(others)


def scrub_environment(environ: dict[str, str] | os._Environ[str]) -> None:
    """Drop inherited GIT_* variables (set by hooks or wrappers) that would redirect our git commands."""
    for name in [key for key in environ if key.startswith("GIT_")]:
        del environ[name]
