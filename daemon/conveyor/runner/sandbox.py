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
    real_home = env.get("HOME")
    secrets = [Path(real_home) / name for name in HOME_SECRETS] if real_home else []
    secrets += [path for path in (sandbox_home.expand(p, env) for p in ctx.credential_files) if path is not None]
    layout = Layout(workdir=workdir, state_dir=ctx.state_dir, home=home, home_inside=inside,
                    read_only=needed_paths(Path(argv[0]), env, workdir), writable=writable, secrets=secrets,
                    identity=ctx.probe.identity(decided.bwrap))
    # bwrap always sets PWD; `env -u PWD` keeps the agent's environment exactly what its allowlist passed
    unset = [] if "PWD" in agent_env else [_env_program(), "-u", "PWD", "--"]
    return Contained([*bwrap_argv(decided.bwrap, layout), *unset, *argv], agent_env,
                     SandboxReport("bwrap", decided.reason))


def _env_program() -> str:
    return shutil.which("env", path=BWRAP_SEARCH_PATH) or "/usr/bin/env"
