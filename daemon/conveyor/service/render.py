"""Render the systemd user unit and the launchd agent plist that run Conveyor for one repository.

One source of truth: the templates in `templates/` (the repository's top-level `systemd/` holds the same
text). The unit's `@{name}` placeholders are filled with values escaped here for systemd's own syntax:
systemd.syntax(7) quoting with C escapes, `%%` for a literal `%` (specifiers), `$$` for a literal `$` in
command lines. A value systemd cannot hold (a control character, a raw value ending in a backslash) is
refused with a sentence rather than written wrong. The plist template is read and written back with
plistlib, so its escaping is plistlib's.
"""

from __future__ import annotations

import hashlib
import os
import plistlib
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from conveyor.core.errors import ConveyorError

AGENT_BINARIES = ("claude", "codex")
HELPER_BINARIES = ("git", "node")  # codex is a node wrapper; every task needs git
# What the agent CLIs write below HOME (config, sessions, caches, locks); only the existing ones are listed.
AGENT_HOME_PATHS = (".claude", ".claude.json", ".claude.json.backup", ".codex", ".cache", ".npm",
                    ".local/state/claude")
STANDARD_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
DEFAULT_DRAIN_GRACE_S = 60
DEFAULT_WATCHDOG_S = 60
DEFAULT_RESTART_S = 10
DEFAULT_START_TIMEOUT_S = 300
STOP_MARGIN_S = 30  # TimeoutStopSec / ExitTimeOut = drain grace + this, so the drain is never cut short
LOG_FILES = ("service.out.log", "service.err.log")  # launchd's StandardOutPath / StandardErrorPath

_SANDBOX_START = "# --- sandbox"
_SANDBOX_END = "# --- end sandbox ---"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:@+=,-]+")
_PLACEHOLDER = re.compile(r"@\{(\w+)\}")
_SLUG_JUNK = re.compile(r"[^A-Za-z0-9_-]+")
_T = TypeVar("_T")


class ServiceError(ConveyorError):
    """A value cannot be written into a service definition; the message says which and why."""


@dataclass(frozen=True)
class ServiceParams:
    """Everything a service definition needs; `default_params` fills it for the current user."""

    repo: Path
    command: tuple[str, ...]  # argv prefix that runs the CLI, e.g. (sys.executable, "-m", "conveyor")
    state_dir: Path
    log_dir: Path
    path_env: str
    extra_rw_paths: tuple[Path, ...] = ()  # writable besides the repository, state and log directories
    drain_grace_s: int = DEFAULT_DRAIN_GRACE_S
    watchdog_s: int = DEFAULT_WATCHDOG_S
    restart_s: int = DEFAULT_RESTART_S
    start_timeout_s: int = DEFAULT_START_TIMEOUT_S
    hardening: bool = True  # off: the sandbox lines are rendered commented out
    missing_tools: tuple[str, ...] = ()  # agent CLIs not found on PATH (reported, not rendered)
    config_dir: Path | None = None  # a configuration folder other than <repo>/config, passed to `run`
    # Credential variables for the service's EnvironmentFile (never rendered into the unit itself).
    credentials: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def environment_file(self) -> Path:
        """Owner-only file of credential variables the unit reads at start (`service install` writes it)."""
        return self.state_dir / "service.env"

    def __post_init__(self) -> None:
        _check_params(self)

    @property
    def argv(self) -> tuple[str, ...]:
        config = () if self.config_dir is None else ("--config-dir", str(self.config_dir))
        return (*self.command, "run", "--repo", str(self.repo), *config)

    @property
    def stop_timeout_s(self) -> int:
        return self.drain_grace_s + STOP_MARGIN_S

    @property
    def unit_name(self) -> str:
        """`conveyor-<repo name>-<hash of the path>.service`: unique per repository, readable in `systemctl`."""
        return f"conveyor-{_slug_hash(self.repo)}.service"

    @property
    def launchd_label(self) -> str:
        return f"com.conveyor.{_slug_hash(self.repo)}"

    @property
    def writable_paths(self) -> tuple[tuple[Path, bool], ...]:
        """(path, required) pairs; a path inside an earlier one is left out. Only the repository is required."""
        chosen: list[tuple[Path, bool]] = []
        candidates = [(self.repo, True), (self.state_dir, False), (self.log_dir, False),
                      *((path, False) for path in self.extra_rw_paths)]
        for path, required in candidates:
            if not any(path.is_relative_to(earlier) for earlier, _ in chosen):
                chosen.append((path, required))
        return tuple(chosen)


def _slug_hash(repo: Path) -> str:
    slug = _SLUG_JUNK.sub("-", repo.name).strip("-")[:40] or "repo"
    digest = hashlib.sha256(str(repo).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{slug}-{digest}"


def _check_params(params: ServiceParams) -> None:
    if not params.command:
        raise ServiceError("the service command is empty; it needs at least the program to run")
    paths = {"repository path": params.repo, "program": Path(params.command[0]), "state directory":
             params.state_dir, "log directory": params.log_dir}
    paths.update({f"writable path {path}": path for path in params.extra_rw_paths})
    if params.config_dir is not None:
        paths["configuration folder"] = params.config_dir
    for what, path in paths.items():
        if not path.is_absolute():
            raise ServiceError(f"the {what} {str(path)!r} must be absolute for a service definition")
    texts = [str(path) for path in paths.values()] + list(params.command) + [params.path_env]
    for text in texts:
        check_text(text)
    for name in ("watchdog_s", "restart_s", "start_timeout_s"):
        if getattr(params, name) < 1:
            raise ServiceError(f"{name} must be at least 1 second, got {getattr(params, name)}")
    if params.drain_grace_s < 0:
        raise ServiceError(f"drain_grace_s cannot be negative, got {params.drain_grace_s}")


def check_text(text: str) -> None:
    """Refuse what neither systemd's syntax nor a plist can carry: control characters and non-UTF-8 bytes."""
    if _CONTROL.search(text):
        raise ServiceError(f"{text!r} contains a control character (newline, tab, ...), which a service "
                           "definition cannot hold; rename that path or remove the character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ServiceError(f"{text!r} is not valid UTF-8, which a service definition needs; rename it") from None


def quote_word(word: str, *, command: bool = False) -> str:
    """One item of a systemd quoted list (systemd.syntax(7) "Quoting"): `%%`, and `$$` in command lines."""
    check_text(word)
    text = word.replace("%", "%%")
    if command:
        text = text.replace("$", "$$")
    if _PLAIN_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def raw_value(value: str) -> str:
    """A setting systemd reads verbatim apart from specifiers (WorkingDirectory=, Description=)."""
    check_text(value)
    if value != value.strip() or value.endswith("\\"):
        raise ServiceError(f"{value!r} ends in whitespace or a backslash, which systemd would strip or read "
                           "as a line continuation; rename that path")
    return value.replace("%", "%%")


def _template(name: str) -> str:
    return resources.files("conveyor.service").joinpath("templates", name).read_text(encoding="utf-8")


def render_systemd_unit(params: ServiceParams) -> str:
    """The user unit for `params`, ready for ~/.config/systemd/user/<params.unit_name>."""
    rw = " ".join(quote_word(("" if required else "-") + str(path)) for path, required in params.writable_paths)
    text = _substitute(_template("conveyor.service"), dict(
        description=raw_value(str(params.repo)),
        exec_start=" ".join(quote_word(arg, command=True) for arg in params.argv),
        working_directory=raw_value(str(params.repo)),
        environment=quote_word(f"PATH={params.path_env}"),
        environment_file=raw_value(str(params.environment_file)),
        start_timeout_s=params.start_timeout_s,
        watchdog_s=params.watchdog_s,
        restart_s=params.restart_s,
        stop_timeout_s=params.stop_timeout_s,
        read_write_paths=rw,
    ))
    return text if params.hardening else _comment_out_sandbox(text)


def _substitute(template: str, values: Mapping[str, object]) -> str:
    """Fill `@{name}` placeholders; nothing else is special (so `$MAINPID` and `%%` stay as written)."""
    return _PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)


def _comment_out_sandbox(text: str) -> str:
    lines, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(_SANDBOX_START):
            inside = True
        elif line.startswith(_SANDBOX_END):
            inside = False
        elif inside and line.strip() and not line.startswith("#"):
            line = "# " + line
        lines.append(line)
    return "".join(lines)


def render_launchd_plist(params: ServiceParams) -> bytes:
    """The launchd agent for `params`, ready for ~/Library/LaunchAgents/<params.launchd_label>.plist."""
    values: dict[str, Any] = {
        "label": params.launchd_label,
        "program_arguments": list(params.argv),
        "working_directory": str(params.repo),
        "path_env": params.path_env,
        "throttle_s": params.restart_s,
        "exit_timeout_s": params.stop_timeout_s,
        "stdout_path": str(params.log_dir / LOG_FILES[0]),
        "stderr_path": str(params.log_dir / LOG_FILES[1]),
    }
    template = plistlib.loads(_template("conveyor.plist").encode("utf-8"))
    return plistlib.dumps(_fill(template, values), sort_keys=False)


def _fill(node: Any, values: Mapping[str, Any]) -> Any:
    """Replace each string that is exactly `@{name}` by its typed value; splice list values into arrays."""
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for item in node:
            filled = _fill(item, values)
            if isinstance(item, str) and isinstance(filled, list):
                out.extend(filled)
            else:
                out.append(filled)
        return out
    if isinstance(node, str) and (match := _PLACEHOLDER.fullmatch(node)):
        return values[match.group(1)]
    return node


def default_params(repo: Path, env: Mapping[str, str], which: Callable[[str], str | None] | None = None, *,
                   state_dir: Path | None = None, extra_rw_paths: Sequence[Path] = (),
                   drain_grace_s: int = DEFAULT_DRAIN_GRACE_S, watchdog_s: int = DEFAULT_WATCHDOG_S,
                   python: str = sys.executable, agent_binaries: Sequence[str] = AGENT_BINARIES,
                   config_dir: Path | None = None) -> ServiceParams:
    """Parameters for this user: PATH with the agent CLIs' directories, writable agent config directories.

    `which` finds a program (default: `shutil.which` over `env["PATH"]`). Pass the loaded configuration's
    `state_dir`, and its worktrees and telemetry directories in `extra_rw_paths` when they lie elsewhere,
    and the `binary` of each tools.yaml entry the agents use in `agent_binaries` (names or absolute paths).
    `config_dir` is rendered into the command only when it is not the repository's own `config/`.
    """
    repo = repo.expanduser().resolve()
    search = _path_entries(env.get("PATH", ""))
    find = which or (lambda name: shutil.which(name, path=os.pathsep.join(search)))
    found = {name: find(name) for name in (*agent_binaries, *HELPER_BINARIES)}
    tool_dirs = [str(Path(location).parent) for location in found.values() if location]
    path_env = os.pathsep.join(_unique([*search, *tool_dirs, str(Path(python).parent), *STANDARD_PATH]))
    home = Path(env.get("HOME") or Path.home())
    agent_paths = [home / rel for rel in AGENT_HOME_PATHS if (home / rel).exists()]
    state = state_dir or repo / ".git" / "conveyor"
    return ServiceParams(
        repo=repo, command=(python, "-m", "conveyor"), state_dir=state, log_dir=state / "logs",
        path_env=path_env, extra_rw_paths=tuple(_unique([*extra_rw_paths, *agent_paths])),
        drain_grace_s=drain_grace_s, watchdog_s=watchdog_s,
        missing_tools=tuple(name for name in agent_binaries if not found[name]),
        config_dir=None if config_dir is None or config_dir.resolve() == repo / "config" else config_dir.resolve())


def _path_entries(path_value: str) -> list[str]:
    """Absolute, printable PATH entries: an empty or relative entry would search the service's cwd."""
    return _unique(entry for entry in path_value.split(os.pathsep)
                   if entry.startswith("/") and not _CONTROL.search(entry))


def _unique(items: Iterable[_T]) -> list[_T]:
    return list(dict.fromkeys(items))
