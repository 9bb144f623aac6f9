"""One invocation of an agent CLI: render argv and environment from tools.yaml, run, parse.

Nothing here knows about a particular CLI: the tool's YAML entry names the binary, the argv template,
how the prompt travels, the environment allowlist and the output parser.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from conveyor.config.argv import render_argv
from conveyor.config.models import ToolSettings
from conveyor.core.errors import ToolUnavailable
from conveyor.core.printable import printable
from conveyor.core.timeutil import Clock
from conveyor.runner.env import build_env
from conveyor.runner.parsers import make_parser
from conveyor.runner.parsers.limits import DEFAULT_LIMITS
from conveyor.runner.process import run_process
from conveyor.runner.sandbox import SandboxContext, SandboxReport, contain
from conveyor.runner.types import Outcome, ParsedRun, ProcessResult, ProcessSpec

# Provider signals that make us stop the CLI at once instead of letting it retry on its own: a rate or
# usage limit and expired credentials do not go away within a CLI's retry budget. Overload does.
STOP_EARLY = (Outcome.RATE_LIMITED, Outcome.AUTH_EXPIRED)


@dataclass(frozen=True)
class InvocationRequest:
    tool_name: str
    tool: ToolSettings
    model: str | None
    prompt: str
    workdir: Path
    task_id: str
    log_path: Path
    timeout_s: float
    idle_timeout_s: float
    kill_grace_s: float
    log_cap_bytes: int
    max_turns: int | None = None
    max_cost_usd: float | None = None
    session_id: str | None = None
    read_only: bool = False          # the review stage: the tool's `review_argv` (no edits, no commands)
    sandbox: SandboxContext | None = None    # None: run uncontained (callers that are not the pipeline)


@dataclass
class Invocation:
    parsed: ParsedRun
    process: ProcessResult
    argv: list[str]
    sandbox: SandboxReport | None = None


def resolve_binary(tool_name: str, tool: ToolSettings, env: Mapping[str, str]) -> Path:
    """Absolute path of the tool's executable on the agent's PATH; ToolUnavailable if it is not there."""
    binary = Path(tool.binary).expanduser()
    if binary.is_absolute():
        if binary.is_file() and shutil.which(str(binary)):
            return binary
        raise ToolUnavailable(f"tool '{tool_name}': {binary} does not exist or is not executable; install it "
                              f"or fix tools.{tool_name}.binary in config/tools.yaml")
    found = shutil.which(tool.binary, path=env.get("PATH", ""))
    if found is None:
        raise ToolUnavailable(f"tool '{tool_name}': '{tool.binary}' is not on PATH; install it or set "
                              f"tools.{tool_name}.binary to its absolute path in config/tools.yaml")
    return Path(found)


def render(request: InvocationRequest, env: Mapping[str, str]) -> tuple[list[str], dict[str, str], bytes | None]:
    """argv (absolute binary first), the agent's environment, and stdin bytes (None = /dev/null)."""
    tool = request.tool
    supports = set(tool.supports)
    values: dict[str, str | None] = {
        "prompt": request.prompt if tool.prompt_via == "argument" else None,
        "model": request.model,
        "workdir": str(request.workdir),
        "task_id": request.task_id,
        "session_id": request.session_id,
        "max_turns": str(request.max_turns) if request.max_turns and "max_turns" in supports else None,
        "max_cost_usd": (f"{request.max_cost_usd:.2f}" if request.max_cost_usd and "max_cost_usd" in supports
                         else None),
    }
    if request.read_only:
        if tool.review_argv is None:
            raise ToolUnavailable(f"tool '{request.tool_name}' has no read-only mode for reviews; set "
                                  f"tools.{request.tool_name}.review_argv in config/tools.yaml")
        template = tool.review_argv
    else:
        template = tool.resume_argv if request.session_id and tool.resume_argv else tool.argv
    binary = resolve_binary(request.tool_name, tool, env)
    argv = [str(binary), *render_argv(template, values)]
    agent_env = build_env(env, tool.env_allowlist, tool.env)
    stdin = request.prompt.encode("utf-8") if tool.prompt_via == "stdin" else None
    return argv, agent_env, stdin


def invoke(request: InvocationRequest, env: Mapping[str, str], *, cancel: threading.Event,
           now: Clock, on_start: Callable[[int], None] | None = None) -> Invocation:
    """Run the CLI to the end (or until cancelled or stopped early on a provider limit) and parse it.

    `on_start` gets the agent's pid (its process group id too) as soon as it runs."""
    argv, agent_env, stdin = render(request, env)
    report = None
    if request.sandbox is not None:
        contained = contain(request.tool_name, request.tool, argv, agent_env, request.workdir, request.sandbox)
        argv, agent_env, report = contained.argv, contained.env, contained.report
    limits = request.tool.limits
    parser = make_parser(request.tool.parser, now=now,
                         limits=DEFAULT_LIMITS.extended(rate_limited=limits.rate_limited,
                                                        overloaded=limits.overloaded,
                                                        auth_expired=limits.auth_expired))
    stop = threading.Event()     # set on an early stop; the daemon's `cancel` stops the run as well
    early: list[tuple[Outcome, float | None]] = []

    def on_line(line: str) -> None:
        parser.feed_line(line)
        if not early:
            signal = parser.live_limit()
            if signal is not None and signal[0] in STOP_EARLY:
                early.append(signal)
                stop.set()

    request.log_path.parent.mkdir(parents=True, exist_ok=True)
    spec = ProcessSpec(argv=argv, cwd=request.workdir, env=agent_env, log_path=request.log_path,
                       stdin_data=stdin, timeout_s=request.timeout_s, idle_timeout_s=request.idle_timeout_s,
                       log_cap_bytes=request.log_cap_bytes, kill_grace_s=request.kill_grace_s)
    process = run_process(spec, on_line=on_line, on_start=on_start, stop=_Either(cancel, stop))
    parsed = _as_data(parser.finish(process))
    if early and parsed.outcome is not Outcome.OK:
        parsed.outcome, parsed.reset_at = early[0][0], early[0][1] or parsed.reset_at
        parsed.error_message = parsed.error_message or f"stopped early: {early[0][0].value}"
    return Invocation(parsed=parsed, process=process, argv=argv, sandbox=report)


def _as_data(parsed: ParsedRun) -> ParsedRun:
    """What the agent printed, without escape sequences or control characters (see core.printable): the
    texts go on into commit messages, pull requests, task files and logs."""
    parsed.final_text = printable(parsed.final_text)
    if parsed.error_message is not None:
        parsed.error_message = printable(parsed.error_message)
    if parsed.model is not None:
        parsed.model = printable(parsed.model)
    if parsed.session_id is not None:
        parsed.session_id = printable(parsed.session_id)
    parsed.permission_denials = [printable(denial) for denial in parsed.permission_denials]
    return parsed


class _Either:
    """Set when any of its events is: the run stops for the daemon's cancel or its own early stop, and
    neither event is set on the other's behalf (a cancelled task is not a provider limit, nor the reverse)."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self._events)
