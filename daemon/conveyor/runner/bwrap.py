"""The bubblewrap command line around one agent run, and the probe that says whether bubblewrap works here.

Why these mounts, in this order (bwrap applies them left to right, a later mount covers an earlier one):

1. the whole filesystem read-only, a fresh /dev and a /proc of the sandbox's own PID namespace (the
   daemon's /proc, whose environ holds its tokens, is not there);
2. private empty /tmp, /var/tmp and /run: other users' and the daemon's temporary files vanish, and so do
   the sockets in /run (a read-only mount does not stop `connect()`: docker.sock or systemd's bus would
   run programs outside); what the agent needs from there (its binary, its PATH, the git metadata its
   workspace reads, resolv.conf) is bound back read-only;
3. the daemon's state folder and the folder holding every task's workspace are emptied the same way: no
   telemetry, transcripts, pid notes or other tasks' workspaces;
4. well-known credential stores of the user's home (ssh keys, cloud and registry logins) are covered;
5. last the writable places: the workspace (its `.git` read-only again on top), the CLI's private home
   (mounted at /run/conveyor/home), and any folder tools.yaml adds; the emptied folders of step 3 are
   then made read-only, so a write beside the workspace (`../x`) fails instead of landing in a
   throw-away folder.

Processes: a new PID namespace (`--unshare-pid`), so the agent can signal only its own processes and
everything it started dies with it (the namespace's init is bwrap, whose exit kills the rest: a `setsid`
grandchild included); `--die-with-parent`; IPC and UTS namespaces of its own; every capability dropped
(as root, bwrap keeps them unless told: a sandboxed root could remount / read-write); a root daemon's
agent runs as an ordinary uid of its own user namespace, so a CLI's own sandbox still works inside
(codex runs bwrap itself, and a root without capabilities cannot map uid 0 into it). The network is
shared: the CLIs must reach their model API (and tests a server on 127.0.0.1). The agent stays in the
process group the daemon supervises (no `--new-session`): it has no controlling terminal anyway (the
daemon starts it in a session of its own), and the group is how a timeout reaches it with a grace period.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PROCESS_FLAGS = ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent",
                 "--cap-drop", "ALL")
EMPTIED_ROOTS = ("/tmp", "/var/tmp", "/run")
HOME_SECRETS = (".ssh", ".gnupg", ".aws", ".azure", ".kube", ".docker", ".config/gh", ".config/gcloud",
                ".netrc", ".git-credentials", ".pypirc", ".npmrc")
PROBE_TIMEOUT_S = 10.0
HOME_INSIDE = Path("/run/conveyor/home")   # where the CLI's private home appears (under the emptied /run)
ROOT_AS_UID = "1000"   # a root daemon's agent runs as this uid of a user namespace of its own (see _identity)


@dataclass(frozen=True)
class Layout:
    """What one run may see and write; every path absolute."""

    workdir: Path
    state_dir: Path
    home: Path | None                      # the CLI's private home (writable), mounted at `home_inside`
    read_only: Sequence[Path] = ()         # must stay readable even where an emptied folder covers it
    writable: Sequence[Path] = ()          # more writable folders (tools.yaml `sandbox_writable`)
    secrets: Sequence[Path] = ()           # files and folders to cover (credentials of the user)
    home_inside: Path | None = None        # default: the home's own path
    identity: Sequence[str] = ()           # user-namespace options the probe found to work (`_identity`)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def git_read_paths(workdir: Path) -> list[Path]:
    """The git metadata a workspace reads outside itself: a linked worktree's git dir and common dir, and
    any object store borrowed through `objects/info/alternates` (the agent's own `git status` needs them)."""
    dot = workdir / ".git"
    found: list[Path] = []
    git_dir = dot
    if dot.is_file():
        text = dot.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return found
        git_dir = (workdir / text.removeprefix("gitdir:").strip()).resolve()
        found.append(git_dir)
    if not git_dir.is_dir():
        return found
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8", errors="replace").strip()).resolve()
        found.append(common)
    alternates = common / "objects" / "info" / "alternates"
    if alternates.is_file():
        for line in alternates.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append((common / "objects" / line).resolve())
    return [path for path in found if path.exists()]


def interpreter_paths(binary: Path) -> list[Path]:
    """A script's `#!` interpreter: its folder, where a link to it points, and its virtualenv when it is one
    (`pyvenv.cfg` beside `bin/`). A CLI installed in a virtualenv under /tmp would otherwise not start."""
    try:
        with open(binary, "rb") as handle:
            first = handle.readline(512)
    except OSError:
        return []
    words = first[2:].split() if first.startswith(b"#!") else []
    if not words or not words[0].startswith(b"/"):
        return []
    interpreter = Path(os.fsdecode(words[0]))
    found = [interpreter.parent, _real(interpreter).parent]
    if (interpreter.parent.parent / "pyvenv.cfg").is_file():
        found.append(interpreter.parent.parent)
    return found


def needed_paths(binary: Path, env: Mapping[str, str], workdir: Path) -> list[Path]:
    """What the agent must still read if an emptied folder covers it: its executable (and where a link to
    it points), the folders on its PATH, its workspace's git metadata, and the resolver configuration."""
    paths = [binary.parent, _real(binary).parent, *interpreter_paths(binary)]
    paths += [Path(entry) for entry in env.get("PATH", "").split(os.pathsep) if entry and os.path.isabs(entry)]
    paths += git_read_paths(workdir)
    resolv = Path("/etc/resolv.conf")
    if resolv.is_symlink():
        paths.append(_real(resolv))
    return [path for path in paths if path.exists()]


def bwrap_argv(bwrap: Path, layout: Layout) -> list[str]:
    """bwrap and its options, up to and including `--`; append the agent's argv."""
    workdir = _real(layout.workdir)
    emptied_first = [Path(root) for root in EMPTIED_ROOTS if os.path.isdir(root) and not os.path.islink(root)]
    emptied_then = _dedupe([_real(layout.state_dir), workdir.parent])
    emptied_then = [path for path in emptied_then if path != Path("/") and path.is_dir()]
    needed = _dedupe(_real(path) for path in layout.read_only)
    argv = [str(bwrap), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    argv += [arg for root in emptied_first for arg in ("--tmpfs", str(root))]
    argv += _ro_binds(path for path in needed if _under(path, emptied_first) and not _under(path, emptied_then))
    argv += [arg for root in emptied_then for arg in ("--tmpfs", str(root))]
    argv += _ro_binds(path for path in needed if _under(path, emptied_then) and not _under(path, [workdir]))
    argv += _covers(layout.secrets)
    argv += ["--bind", str(workdir), str(workdir)]
    if (workdir / ".git").exists():
        argv += ["--ro-bind", str(workdir / ".git"), str(workdir / ".git")]
    if layout.home is not None:
        argv += ["--bind", str(_real(layout.home)), str(layout.home_inside or _real(layout.home))]
    for path in _dedupe(layout.writable):
        real = _real(path)
        argv += ["--bind", str(real), str(real)]
    # the emptied folders only hold mount points now: read-only, so a write to `../` fails loudly
    argv += [arg for root in emptied_then for arg in ("--remount-ro", str(root))]
    argv += [*layout.identity, *PROCESS_FLAGS, "--chdir", str(workdir), "--"]
    return argv


def home_inside() -> Path | None:
    """Where the private home is mounted: under /run (emptied, so the mount point can be made), not under
    /tmp, where codex refuses to put the helper its own sandbox runs (`codex-linux-sandbox`)."""
    return HOME_INSIDE if os.path.isdir("/run") and not os.path.islink("/run") else None


def identity_options() -> list[list[str]]:
    """User-namespace options to try, best first. An unprivileged daemon gets a user namespace from bwrap
    anyway. A root daemon's agent would be root without capabilities, and such a root cannot map uid 0
    into the user namespace a CLI's own sandbox makes (codex runs bwrap itself): so it runs as an ordinary
    uid of a namespace of its own (files it writes still belong to root outside), else as plain root."""
    if os.geteuid() != 0:
        return [[]]
    return [["--unshare-user", "--uid", ROOT_AS_UID, "--gid", ROOT_AS_UID], []]


def _dedupe(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


def _ro_binds(paths: Iterable[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--ro-bind", str(path), str(path))]


def _covers(paths: Iterable[Path]) -> list[str]:
    argv: list[str] = []
    for path in _dedupe(paths):
        if path.is_symlink() or not path.exists():
            continue
        argv += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", "/dev/null", str(path)]
    return argv


@dataclass
class BwrapProbe:
    """Whether bubblewrap can build a sandbox on this machine: asked once per bwrap path, then remembered.

    User namespaces may be switched off (a container, a hardened kernel, AppArmor's userns restriction),
    in which case bwrap is installed but fails; `auto` must then run without it and say so."""

    timeout_s: float = PROBE_TIMEOUT_S
    _answers: dict[str, tuple[str | None, list[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, bwrap: Path) -> str | None:
        """None when a trial sandbox ran `exit 0`; else why not, in words."""
        return self._answer(bwrap)[0]

    def identity(self, bwrap: Path) -> list[str]:
        """The user-namespace options that worked in the trial (see `identity_options`)."""
        return self._answer(bwrap)[1]

    def _answer(self, bwrap: Path) -> tuple[str | None, list[str]]:
        key = str(bwrap)
        with self._lock:
            if key not in self._answers:
                problem: str | None = "no trial ran"
                for options in identity_options():
                    problem = self._try(bwrap, options)
                    if problem is None:
                        self._answers[key] = (None, options)
                        break
                else:
                    self._answers[key] = (problem, [])
            return self._answers[key]

    def _try(self, bwrap: Path, identity: list[str]) -> str | None:
        argv = [str(bwrap), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                *identity, *PROCESS_FLAGS, "--", "/bin/sh", "-c", "exit 0"]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout_s,
                                  env={"PATH": "/usr/bin:/bin"}, check=False)
        except subprocess.TimeoutExpired:
            return f"{bwrap} did not finish a trial sandbox within {self.timeout_s:g} s"
        except OSError as exc:
            return f"{bwrap} cannot be started: {exc.strerror or exc}"
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
            return (f"{bwrap} cannot build a sandbox here (exit {done.returncode}: "
                    f"{said[-1] if said else 'no message'}); user namespaces may be disabled")
        return None
