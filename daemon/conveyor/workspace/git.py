"""The one module that runs git (every other module asks it).

Every command is a plain subprocess with an explicit working directory that must exist: a library that
quietly ran git in the daemon's own folder when the task's folder had vanished (GitPython did: `if not
os.access(cwd, X_OK): cwd = None`) once committed a user's uncommitted work onto their branch. Every
command runs with hooks disabled (`core.hooksPath=/dev/null`), without signing or prompts, and with a
minimal environment (no token: a program git starts on our behalf never sees the daemon's credentials).
Git's failures become sentences a user can act on.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.errors import GitError

_SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "commit.gpgsign=false", "-c", "core.quotepath=false",
                "-c", "advice.detachedHead=false", "-c", "gc.auto=0", "-c", "maintenance.auto=false")
_SCRUBBED_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GIT_EDITOR": "true",
                 "GIT_PAGER": "cat", "PAGER": "cat"}
# What git needs from the daemon's environment: finding programs, the user's own config and identity
# files, the locale, and an ssh agent for pushing. Never a token.
_PASSED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "XDG_CONFIG_HOME",
               "SSH_AUTH_SOCK")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git command: the few variables git needs, our settings, then `extra`."""
    env = {name: value for name, value in os.environ.items()
           if name in _PASSED_ENV or name.startswith("LC_")}
    env.update(_SCRUBBED_ENV)
    env.update(extra or {})
    return env


def execute(cwd: Path, args: list[str], *, env: Mapping[str, str] | None = None, raw: bool = False,
            stdin: bytes | None = None, config: tuple[str, ...] = ()) -> str | bytes:
    """Run `git ARGS` in `cwd` (which must exist: git never runs anywhere else), return its stdout.

    `env` is added to the minimal environment; `config` is more `-c` pairs after the safe ones. Raises
    GitError with git's own words.
    """
    if not os.path.isdir(cwd):
        raise GitError(f"git {args[0]} cannot run in {cwd}: the folder is missing (refusing to run it anywhere "
                       "else)")
    try:
        done = subprocess.run(["git", *_SAFE_CONFIG, *config, *args], cwd=cwd, env=git_env(env),
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                              capture_output=True, check=False)
    except OSError as exc:   # git is not installed, or the folder vanished between the check and the start
        raise GitError(f"git {args[0]} cannot run in {cwd}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        stderr = done.stderr.decode("utf-8", "replace").strip()
        if "not a git repository" in stderr:
            raise GitError(f"{cwd} is not a git repository; run `git init` there or pass --repo")
        raise GitError(f"git {args[0]} failed in {cwd}: {stderr or f'exit code {done.returncode}'}")
    if raw:
        return done.stdout
    return done.stdout.decode("utf-8", "surrogateescape").removesuffix("\n")


def run(path: Path, *args: str) -> str:
    """Run one git command in `path` (hooks off, minimal environment); raise GitError with git's own words."""
    return str(execute(path, list(args)))


def version() -> tuple[int, ...]:
    """The installed git's version, e.g. (2, 39, 5)."""
    try:
        out = subprocess.run(["git", "version"], capture_output=True, text=True, check=True, env=git_env(),
                             stdin=subprocess.DEVNULL).stdout
        found = re.search(r"(\d+(?:\.\d+)+)", out)
        if found is None:
            raise ValueError(f"unexpected `git version` output {out!r}")
        return tuple(int(part) for part in found.group(1).split(".")[:3])
    except (subprocess.CalledProcessError, OSError, ValueError) as exc:
        raise GitError(f"git is not runnable ({exc})") from exc


def _rev_parse(start: Path, *args: str) -> list[str]:
    """`git rev-parse ARGS` in `start`, one output line per answer.

    Separate from `execute` because its failures mean "not a repository here", said as such.
    """
    try:
        done = subprocess.run(["git", *_SAFE_CONFIG, "rev-parse", *args], cwd=start, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, env=git_env(),
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
    return rev_parse(repo, f"refs/heads/{branch}") is not None


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
    fd = os.open(common_git_dir(repo) / "conveyor-worktrees.lock", os.O_RDWR | os.O_CREAT, 0o600)
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
    """Remove a linked worktree (left by a Conveyor before task workspaces became repositories of their own)
    even if it is dirty or already half gone; never fails on a missing one."""
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
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(GitError):
        run(repo, "worktree", "prune")


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
    return str(execute(repo, list(args), env={"GIT_LITERAL_PATHSPECS": "1", **env}))


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


def push(repo: Path, remote: str, branch: str, *, replace: bool = True) -> None:
    """Push the task branch (never the base branch) to `remote`, replacing an older push of it (`replace`),
    or only as a fast-forward (a fleet: another node's push of the branch is never overwritten).

    Runs in the user's repository, whose configuration (the remote's URL) no agent can write: agents work
    in repositories of their own (see task_workspace)."""
    if not re.match(r"conveyor/", branch):
        raise GitError(f"refusing to push '{branch}': only conveyor/* task branches are pushed")
    refspec = f"refs/heads/{branch}:refs/heads/{branch}"
    run(repo, "push", *(["--force-with-lease"] if replace else []), "--no-verify", "--quiet", remote, refspec)


class BranchMoved(GitError):
    """The remote branch is no longer an ancestor of what we push (someone pushed to it meanwhile)."""


_REJECTED = ("non-fast-forward", "fetch first", "[rejected]", "stale info", "updates were rejected")


def fetch_branch(repo: Path, remote: str, branch: str) -> str | None:
    """Fetch `branch` of `remote` into `refs/remotes/<remote>/<branch>` and return its sha; None when the
    remote has no such branch. Only conveyor/* branches: a follow-up never starts from anything else."""
    if not branch.startswith("conveyor/"):
        raise GitError(f"refusing to fetch '{branch}': only conveyor/* task branches are followed up")
    tracking = f"refs/remotes/{remote}/{branch}"
    try:
        run(repo, "fetch", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", "--quiet", remote,
            f"+refs/heads/{branch}:{tracking}")
    except GitError as exc:
        if "couldn't find remote ref" in str(exc):
            return None
        raise
    return rev_parse(repo, tracking)


def push_fast_forward(repo: Path, remote: str, sha: str, branch: str, *, base: str) -> None:
    """Push commit `sha` to `branch` of `remote` as a fast-forward only: never forced, never the base branch,
    only a conveyor/* branch. A remote branch that moved meanwhile raises BranchMoved.

    Runs in the user's repository, whose configuration (the remote's URL) no agent can write."""
    if not branch.startswith("conveyor/") or branch == base or not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        raise GitError(f"refusing to push {sha!r} to '{branch}': only a commit onto a conveyor/* task branch")
    try:
        run(repo, "push", "--no-verify", "--quiet", remote, f"{sha}:refs/heads/{branch}")
    except GitError as exc:
        if any(marker in str(exc).lower() for marker in _REJECTED):
            raise BranchMoved(str(exc)) from exc
        raise


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
