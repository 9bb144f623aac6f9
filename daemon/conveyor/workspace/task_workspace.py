"""A task's workspace: a repository of the agent's own that the user's repository cannot be reached from.

Two git directories, one working tree:

- the agent's: `<worktrees_dir>/<id>/.git`, a small repository on branch `conveyor/<id>` at the base
  commit, borrowing the user's objects through `objects/info/alternates` (nothing is copied). The agent
  may do anything to it (config, hooks, HEAD, refs, index, commits): none of it is ever read by the
  daemon, and none of it reaches the user's `.git`, which is not named anywhere in it but the alternates
  line (objects are read-only through it).
- the daemon's view: `<state_dir>/workspaces/<id>/`, a git dir only the daemon writes (config, HEAD, the
  index of the base tree the files were checked out from). Every command on the agent's files runs with
  `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE` pointing there, the user's object directory as
  `GIT_OBJECT_DIRECTORY`, and no system or global configuration: no configuration the agent could have
  written is read, so nothing the agent chose (fsmonitor, filters, diff drivers, hooks, pagers, includes)
  runs, and no repository is ever discovered by walking up from a folder the agent may have emptied.

The change is always the base commit → the files the agent left (whatever it did to HEAD or the index);
the commit is built from that tree with the base as its parent, written straight into the user's object
store, and lands on `refs/heads/conveyor/<id>` by `update-ref`: the user's HEAD, index, working tree and
config are never touched. Creation costs one `git read-tree -u` (the same checkout a linked worktree does)
plus a few small files; see `scripts/bench.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.disk_trouble import disk_state
from conveyor.core.errors import GitError
from conveyor.core.printable import printable
from conveyor.core.private import private_dir
from conveyor.workspace import git

VIEWS = "workspaces"   # <state_dir>/workspaces/<task id>/: the daemon's own git dir for a task's workspace
GITLINK = "160000"
# Overrides on top of the view's own config (which the daemon writes): belt and braces for the keys that
# start programs, should git ever read a configuration we did not expect.
_NEUTRAL_CONFIG = ("-c", "core.fsmonitor=false", "-c", "core.untrackedCache=false", "-c", "core.pager=cat",
                   "-c", "diff.external=", "-c", "core.sshCommand=", "-c", "credential.helper=",
                   "-c", "submodule.recurse=false", "-c", "core.symlinks=true")


class WorkspaceGone(GitError):
    """The workspace folder is missing or is no longer the folder the daemon made (the agent or someone
    removed or replaced it): nothing is staged or committed from anywhere else."""


@dataclass(frozen=True)
class Workspace:
    """Where a task's agent works and how the daemon looks at it (see the module docstring)."""

    repo: Path            # the user's checkout (refs land there)
    path: Path            # the agent's working tree (cwd of the agent and of verify commands)
    view: Path            # the daemon's git dir for this workspace
    objects: Path         # the user's object directory
    base: str             # the base commit's sha: every change is measured from it
    branch: str           # conveyor/<id>
    identity: tuple[int, int]            # (st_dev, st_ino) of `path` when made
    gitlinks: tuple[str, ...] = ()        # submodule paths in the base tree

    @property
    def index(self) -> Path:
        return self.view / "index"


@dataclass(frozen=True)
class StagedChange:
    """What the agent changed relative to the base: the paths, and the diff the secret scan reads."""

    paths: list[str]
    diff: bytes


def view_dir(state_dir: Path, task_id: str) -> Path:
    return state_dir / VIEWS / task_id


def create(repo: Path, git_dir: Path, path: Path, view: Path, branch: str, base_branch: str, *,
           start: str | None = None) -> Workspace:
    """A fresh workspace at `path` holding `base_branch`'s tree, with its view at `view`; leftovers of an
    earlier run are removed first. Raises GitError when the base branch cannot be read.

    `start` (a full ref or a commit sha) starts from there instead: a follow-up starts from its pull request's
    head as fetched, and its change is measured from that commit."""
    remove(path, view)
    try:
        lines = git.run(repo, "rev-parse", "--show-object-format", "--verify", "--quiet",
                        f"{start or 'refs/heads/' + base_branch}^{{commit}}").split("\n")
    except GitError:
        lines = []
    if len(lines) != 2 or not lines[1]:
        if start is not None:
            raise GitError(f"the start '{start}' of the task's workspace is not a commit of this repository")
        raise GitError(f"the base branch '{base_branch}' does not exist; create it (git branch {base_branch}) "
                       "or set base_branch in config/daemon.yaml")
    object_format, base = lines[0].strip(), lines[1].strip()
    objects = (git_dir / "objects").resolve()
    private_dir(path.parent)
    private_dir(path)
    _write_view(view, git_dir, object_format)
    stat_now = os.lstat(path)
    workspace = Workspace(repo=repo, path=path, view=view, objects=objects, base=base, branch=branch,
                          identity=(stat_now.st_dev, stat_now.st_ino))
    try:
        _view_git(workspace, "read-tree", "--reset", "-u", base)
    except GitError as exc:   # git says "unable to write file" without why: name a full or read-only disk
        raise GitError(f"{exc}{disk_state(path)}") from exc
    staged = str(_view_git(workspace, "ls-files", "-z", "--stage"))
    gitlinks = tuple(entry.split("\t", 1)[1] for entry in staged.split("\0")
                     if entry.startswith(GITLINK + " ") and "\t" in entry)
    _write_agent_repo(workspace, object_format)
    return Workspace(repo=repo, path=path, view=view, objects=objects, base=base, branch=branch,
                     identity=workspace.identity, gitlinks=gitlinks)


def _write_view(view: Path, git_dir: Path, object_format: str) -> None:
    """The daemon's git dir: HEAD, an empty refs/, a config we wrote, and the user's info/exclude (so the
    files the user ignores stay out of a task's change, as they did in a linked worktree)."""
    private_dir(view)
    (view / "refs").mkdir(exist_ok=True)
    (view / "info").mkdir(exist_ok=True)
    (view / "HEAD").write_text("ref: refs/heads/conveyor-view\n", encoding="utf-8")
    (view / "config").write_text(_core_config(object_format) + "\tfsmonitor = false\n", encoding="utf-8")
    with contextlib.suppress(OSError):
        shutil.copyfile(git_dir / "info" / "exclude", view / "info" / "exclude")


def _core_config(object_format: str) -> str:
    version = 0 if object_format == "sha1" else 1
    text = (f"[core]\n\trepositoryformatversion = {version}\n\tfilemode = true\n\tbare = false\n"
            "\tlogallrefupdates = true\n")
    if version:
        text = text.replace("[core]", f"[extensions]\n\tobjectformat = {object_format}\n[core]", 1)
    return text


def _write_agent_repo(workspace: Workspace, object_format: str) -> None:
    """The agent's own repository, written directly (a `git init` would cost a process and copy templates):
    on `conveyor/<id>` at the base, with the index of the checkout so `git status` is clean and fast."""
    dot_git = workspace.path / ".git"
    ref = dot_git / "refs" / "heads" / workspace.branch
    ref.parent.mkdir(parents=True)
    (dot_git / "refs" / "tags").mkdir()
    (dot_git / "objects" / "info").mkdir(parents=True)
    (dot_git / "objects" / "pack").mkdir()
    ref.write_text(workspace.base + "\n", encoding="utf-8")
    (dot_git / "HEAD").write_text(f"ref: refs/heads/{workspace.branch}\n", encoding="utf-8")
    (dot_git / "config").write_text(_core_config(object_format), encoding="utf-8")
    (dot_git / "objects" / "info" / "alternates").write_text(f"{workspace.objects}\n", encoding="utf-8")
    shutil.copyfile(workspace.index, dot_git / "index")


def _check(workspace: Workspace) -> None:
    """Refuse to look at anything but the folder we made: missing, or replaced (by a symlink to the user's
    checkout, say), it is not the agent's work."""
    try:
        now = os.lstat(workspace.path)
    except OSError as exc:
        raise WorkspaceGone(f"the task's workspace {workspace.path} is gone ({exc.strerror}); nothing was "
                            "committed") from exc
    if not stat.S_ISDIR(now.st_mode) or (now.st_dev, now.st_ino) != workspace.identity:
        raise WorkspaceGone(f"the task's workspace {workspace.path} was replaced while the agent ran; nothing "
                            "was committed")


def _view_env(workspace: Workspace, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"GIT_DIR": str(workspace.view), "GIT_WORK_TREE": str(workspace.path),
            "GIT_INDEX_FILE": str(workspace.index), "GIT_OBJECT_DIRECTORY": str(workspace.objects),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_ATTR_NOSYSTEM": "1",
            "GIT_CEILING_DIRECTORIES": str(workspace.path.parent), **(extra or {})}


def _view_git(workspace: Workspace, *args: str, raw: bool = False, stdin: bytes | None = None,
              env: dict[str, str] | None = None) -> str | bytes:
    """One git command on the agent's files through the daemon's view (cwd: the workspace, checked)."""
    _check(workspace)
    return git.execute(workspace.path, list(args), env=_view_env(workspace, env), raw=raw, stdin=stdin,
                       config=_NEUTRAL_CONFIG)


def stage(workspace: Workspace) -> StagedChange:
    """Stage the files the agent left into the daemon's index; return the change from the base.

    One `git diff` serves both the paths (its `diff --git a/X b/X` headers, with --no-renames both sides
    name the same path) and the secret scan: prefixes are explicit so no setting changes how names read,
    `--text` shows files git would call binary (a `-diff` attribute must not hide a key), `--no-textconv`
    and `--no-ext-diff` keep drivers out. Only a name git had to quote sends us to a `--name-only -z` call.
    """
    _view_git(workspace, "add", "--all")
    diff = _view_git(workspace, "diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-textconv",
                     "--no-renames", "--text", "--ignore-submodules=none", "--src-prefix=a/",
                     "--dst-prefix=b/", workspace.base, raw=True)
    assert isinstance(diff, bytes)
    paths = paths_of(diff)
    if paths is None:
        out = str(_view_git(workspace, "diff", "--cached", "--name-only", "-z", "--no-renames", workspace.base))
        paths = [name for name in out.split("\0") if name]
    return StagedChange(paths, diff)


def has_changes(workspace: Workspace) -> bool:
    """Whether the agent's files differ from the base (ignored files do not count)."""
    return bool(stage(workspace).paths)


def staged_tree(workspace: Workspace) -> str:
    """The tree of what is staged now: the review stage diffs a later round against the tree it reviewed."""
    return str(_view_git(workspace, "write-tree")).strip()


def review_diff(workspace: Workspace, since: str | None = None) -> str:
    """The staged change with context, for a reviewer: against the base, or against the tree `since`.

    Same safety flags as the secret scan's diff: no external diff or textconv programs, fixed prefixes."""
    return str(_view_git(workspace, "diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv",
                         "--no-renames", "--src-prefix=a/", "--dst-prefix=b/", since or workspace.base))


def staged_line_counts(workspace: Workspace) -> list[tuple[int, int, str]]:
    """(added, deleted, path) of each staged file relative to the base; a binary file counts as 0 lines."""
    out = str(_view_git(workspace, "diff", "--cached", "--numstat", "-z", "--no-renames", workspace.base))
    counts = []
    for record in out.split("\0"):
        added, _, rest = record.partition("\t")
        deleted, _, path = rest.partition("\t")
        if path:
            counts.append((int(added) if added.isdigit() else 0, int(deleted) if deleted.isdigit() else 0, path))
    return counts


def submodule_changes(workspace: Workspace, change: StagedChange) -> list[str]:
    """Submodule paths the change touches (a gitlink added, moved or removed, or files written inside a
    submodule's folder, which git would silently leave out): Conveyor does not commit into submodules."""
    touched: list[str] = []
    if b"160000" in change.diff:
        raw = str(_view_git(workspace, "diff", "--cached", "--raw", "-z", "--no-renames", workspace.base))
        fields = raw.split("\0")
        for header, name in zip(fields[::2], fields[1::2], strict=False):
            modes = header.lstrip(":").split(" ")[:2]
            if GITLINK in modes:
                touched.append(name)
    for link in workspace.gitlinks:
        folder = workspace.path / link
        with contextlib.suppress(OSError):
            if folder.is_dir() and not folder.is_symlink() and any(folder.iterdir()) and link not in touched:
                touched.append(link)
    return sorted(touched)


def commit(workspace: Workspace, message: str, author_name: str, author_email: str) -> str:
    """Commit the staged tree on top of the base and point `refs/heads/<branch>` of the user's repository
    at it; returns the commit's sha. The message goes through stdin (no argument length limit) and keeps no
    control character an agent put in its summary (core.printable)."""
    tree = staged_tree(workspace)
    identity = {"GIT_AUTHOR_NAME": author_name, "GIT_AUTHOR_EMAIL": author_email,
                "GIT_COMMITTER_NAME": author_name, "GIT_COMMITTER_EMAIL": author_email}
    sha = str(_view_git(workspace, "commit-tree", tree, "-p", workspace.base, "-F", "-",
                        stdin=printable(message).encode("utf-8", "replace"), env=identity)).strip()
    git.run(workspace.repo, "update-ref", "-m", f"conveyor: {workspace.branch}", f"refs/heads/{workspace.branch}",
            sha)
    return sha


def remove(path: Path, view: Path) -> None:
    """Remove a workspace and its view, whatever the agent left (read-only folders included); never fails
    on a missing one."""
    for folder in (path, view):
        if os.path.lexists(folder):
            _rmtree(folder)


def _rmtree(folder: Path) -> None:
    if folder.is_symlink() or not folder.is_dir():
        with contextlib.suppress(FileNotFoundError):
            folder.unlink()
        return

    def unlock(_function: object, failed: str, _excinfo: object) -> None:
        parent = os.path.dirname(failed)
        with contextlib.suppress(OSError):
            os.chmod(parent, 0o700)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, 0o700)
                shutil.rmtree(failed, ignore_errors=True)
            else:
                os.unlink(failed)

    shutil.rmtree(folder, onerror=unlock)


def paths_of(diff: bytes) -> list[str] | None:
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
