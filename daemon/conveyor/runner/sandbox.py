"""Whether and how one agent run is contained: tools.yaml's `sandbox: auto | bwrap | none`, decided here.

`auto` (the default) uses bubblewrap where it works and otherwise runs the agent uncontained with a
warning; `bwrap` insists (the task fails with the fix when bubblewrap cannot run); `none` is the user's
explicit choice. The decision and its reason go into the task's `result` (`sandbox`, `sandbox_reason`).
macOS has no implementation: there the agent runs with the daemon user's rights (README, `conveyor doctor`).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from conveyor.config.models import ToolSettings
from conveyor.core.errors import ConveyorError
from conveyor.runner import sandbox_home
from conveyor.runner.bwrap import HOME_SECRETS, BwrapProbe, Layout, bwrap_argv, home_inside, needed_paths

log = structlog.get_logger("conveyor.runner.sandbox")
BWRAP_SEARCH_PATH = "/usr/bin:/bin:/usr/local/bin"
NOT_CONTAINED_MACOS = ("no sandbox on macOS (no sandbox-exec profile is implemented): the agent can read "
                       "and write whatever the daemon's user can, and signal its processes")


class SandboxUnavailable(ConveyorError):
    """tools.yaml asks for `sandbox: bwrap` and bubblewrap cannot run here; the message names the fix."""


@dataclass(frozen=True)
class SandboxContext:
    """What the pipeline knows that the sandbox needs: the state folder, the probe and every tool's
    credential files (to cover them from agents of other tools)."""

    state_dir: Path
    probe: BwrapProbe = field(default_factory=BwrapProbe)
    credential_files: Sequence[str] = ()
    platform: str = sys.platform


@dataclass(frozen=True)
class SandboxReport:
    kind: str       # "bwrap" | "none"
    reason: str

    def as_result(self) -> dict[str, Any]:
        return {"sandbox": self.kind, "sandbox_reason": self.reason}


@dataclass(frozen=True)
class Contained:
    argv: list[str]
    env: dict[str, str]
    report: SandboxReport


@dataclass(frozen=True)
class Plan:
    """The decision before anything is prepared: bwrap (and which binary) or none, and why."""

    bwrap: Path | None
    reason: str


def find_bwrap(env: Mapping[str, str]) -> Path | None:
    found = shutil.which("bwrap", path=env.get("PATH", "")) or shutil.which("bwrap", path=BWRAP_SEARCH_PATH)
    return Path(found) if found else None


def plan(tool_name: str, tool: ToolSettings, env: Mapping[str, str], ctx: SandboxContext) -> Plan:
    """bwrap or none for this tool on this machine; `SandboxUnavailable` when `bwrap` is demanded in vain."""
    field_name = f"tools.{tool_name}.sandbox"
    if tool.sandbox == "none":
        return Plan(None, f"{field_name} is none in config/tools.yaml: the agent is not contained")
    problem: str | None
    bwrap = None
    if not ctx.platform.startswith("linux"):
        problem = NOT_CONTAINED_MACOS if ctx.platform == "darwin" else f"no sandbox on {ctx.platform}"
    else:
        bwrap = find_bwrap(env)
        problem = ("bubblewrap is not installed (apt-get install bubblewrap)" if bwrap is None
                   else ctx.probe.problem(bwrap))
    if problem is None and bwrap is not None:
        return Plan(bwrap, "bubblewrap: workspace writable, everything else read-only or hidden, own PID namespace")
    if tool.sandbox == "bwrap":
        raise SandboxUnavailable(f"tool '{tool_name}': {field_name} is bwrap but {problem}; fix that, or set "
                                 f"{field_name} to auto or none in config/tools.yaml")
    return Plan(None, f"{problem}; {field_name} is auto, so the agent runs uncontained")


def contain(tool_name: str, tool: ToolSettings, argv: list[str], env: Mapping[str, str], workdir: Path,
            ctx: SandboxContext) -> Contained:
    """The argv and environment that run `argv` inside the sandbox this tool gets (or unchanged, with why)."""
    decided = plan(tool_name, tool, env, ctx)
    if decided.bwrap is None:
        if tool.sandbox == "auto":   # wanted one, got none: say so; `none` is the user's own choice
            log.warning("sandbox.none", tool=tool_name, reason=decided.reason)
        return Contained(list(argv), dict(env), SandboxReport("none", decided.reason))
    home = sandbox_home.home_dir(ctx.state_dir, tool_name)
    inside = home_inside()
    agent_env = sandbox_home.prepare(home, tool, env, inside)
    writable = [path for path in (sandbox_home.expand(p, env) for p in tool.sandbox_writable) if path is not None]
    for path in writable:   # a missing entry becomes a folder; a file must exist to be bound
        if not path.exists():
            path.mkdir(parents=True, exist_ok=True)
    layout = Layout(workdir=workdir, state_dir=ctx.state_dir, home=home, home_inside=inside,
                    read_only=needed_paths(Path(argv[0]), env, workdir), writable=writable,
                    secrets=_secrets(env, ctx), identity=ctx.probe.identity(decided.bwrap))
    return Contained(_wrapped(decided.bwrap, layout, argv, agent_env), agent_env,
                     SandboxReport("bwrap", decided.reason))


def contain_check(tool_name: str, tool: ToolSettings, argv: list[str], env: Mapping[str, str], workdir: Path,
                  ctx: SandboxContext, *, home: Path, read_also: Sequence[Path] = ()) -> Contained:
    """A verify command in the sandbox the author's tool gets. Verify runs the agent's code (its tests, its
    conftest.py, its package.json scripts), so it is contained like the agent: the workspace writable, the
    user's checkout, home and the daemon's state read-only or hidden. `home` is an empty private HOME for
    this task's checks (no credentials are copied in); `read_also` stays readable under an emptied folder
    (the repository's virtualenv)."""
    decided = plan(tool_name, tool, env, ctx)
    if decided.bwrap is None:
        return Contained(list(argv), dict(env), SandboxReport("none", decided.reason))
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    inside = home_inside()
    check_env = dict(env)
    if "HOME" in env:
        check_env["HOME"] = str(inside or home)
    program = shutil.which(argv[0], path=env.get("PATH", "")) or argv[0]
    read_only = [*needed_paths(Path(program), env, workdir), *(path for path in read_also if path.exists())]
    layout = Layout(workdir=workdir, state_dir=ctx.state_dir, home=home, home_inside=inside, read_only=read_only,
                    secrets=_secrets(env, ctx), identity=ctx.probe.identity(decided.bwrap))
    return Contained(_wrapped(decided.bwrap, layout, argv, check_env), check_env,
                     SandboxReport("bwrap", decided.reason))


def _secrets(env: Mapping[str, str], ctx: SandboxContext) -> list[Path]:
    """The user's credential stores to cover: the well-known ones of the home and every tool's own files."""
    real_home = env.get("HOME")
    secrets = [Path(real_home) / name for name in HOME_SECRETS] if real_home else []
    return secrets + [path for path in (sandbox_home.expand(p, env) for p in ctx.credential_files) if path]


def _wrapped(bwrap: Path, layout: Layout, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    # bwrap always sets PWD; `env -u PWD` keeps the environment exactly what its allowlist passed
    unset = [] if "PWD" in env else [_env_program(), "-u", "PWD", "--"]
    return [*bwrap_argv(bwrap, layout), *unset, *argv]


def _env_program() -> str:
    return shutil.which("env", path=BWRAP_SEARCH_PATH) or "/usr/bin/env"
