"""The completion gate, in order: the change is not empty, touches only allowed paths, adds no secret, and
passes the `verify` commands. Nothing is committed before all of them pass.

Each step returns `CheckResult`s for the pull request body and a `GateFailure` (kind + sentence for the
task's error block) when it blocks. The verify commands are split like a shell would split them (shlex)
but are never run by a shell: `make test` works, while pipes, `&&`, redirections, globs or `$VAR` need
`sh -c '...'` spelled out by whoever writes the command. They run in the task's worktree through the one
process supervisor, with the agent tool's allowlisted environment (never the daemon's full one).
"""

from __future__ import annotations

import posixpath
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from conveyor.checks.paths import check_paths, render_violations
from conveyor.checks.secrets import added_lines, render_findings, scan_unified_diff
from conveyor.core.errors import ConveyorError
from conveyor.core.printable import printable
from conveyor.runner.process import SpawnError, ended_how, log_tail, run_command, succeeded

log = structlog.get_logger()

ROADMAP_NAME = "roadmap.md"          # any file of this name is a roadmap file (compared case-insensitively)
OUTPUT_TAIL_BYTES = 3000             # of a failing verify command's output, for the agent and the error block
WITHHELD = "(withheld: the text looked like it contains a secret ({kinds}); see the agent's log)"


@dataclass(frozen=True)
class CheckResult:
    """One gate check as a reviewer reads it in the pull request and the task's result."""

    name: str
    passed: bool
    detail: str
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        result = "skipped" if self.skipped else "passed" if self.passed else "failed"
        return {"check": self.name, "result": result, "detail": self.detail}


@dataclass(frozen=True)
class GateFailure:
    """Why nothing was committed: `kind` for the error block, `message` naming what to do."""

    kind: str
    message: str


@dataclass(frozen=True)
class GateResult:
    checks: list[CheckResult]
    failure: GateFailure | None = None


# ------------------------------------------------------------------ diff, paths, secrets
def no_changes_failure() -> GateFailure:
    return GateFailure("no_changes", "the agent finished without changing any file, so there is nothing "
                                     "to commit; if the task needs no changes, set `expect_changes: false`")


def check_change(worktree: Path, changed: Sequence[str], *, board_dir: str, roadmap_file: str,
                 allowed_globs: Sequence[str] | None, diff: bytes) -> GateResult:
    """Paths first (cheap, and a refused path is the clearer message), then the secret scan.

    `diff` is the change from the task's base as task_workspace.stage made it (raw bytes, `--text`).
    """
    checks = [CheckResult("changes", True, f"{len(changed)} file(s) changed")]
    named = (path for path in changed if posixpath.basename(path).casefold() == ROADMAP_NAME)
    roadmaps = [roadmap_file, *named]
    violations = check_paths(changed, board_dir=board_dir, roadmap_files=roadmaps,
                             allowed_globs=allowed_globs, root=worktree)
    if violations:
        checks.append(CheckResult("allowed paths", False, f"{len(violations)} path(s) refused"))
        return GateResult(checks, GateFailure("paths", render_violations(violations)))
    scope = "the task's allowed_paths" if allowed_globs is not None else "no protected path touched"
    checks.append(CheckResult("allowed paths", True, scope))
    return _secret_scan(checks, diff)


def _secret_scan(checks: list[CheckResult], staged: bytes) -> GateResult:
    diff = staged.decode("utf-8", errors="replace")
    findings = scan_unified_diff(diff)
    if findings:
        checks.append(CheckResult("secret scan", False, f"{len(findings)} possible secret(s) in added lines"))
        return GateResult(checks, GateFailure("secrets", render_findings(findings)))
    scanned = sum(1 for _ in added_lines(diff))
    checks.append(CheckResult("secret scan", True, f"{scanned} added line(s), nothing found"))
    return GateResult(checks)


def secret_kinds(text: str) -> list[str]:
    """Kinds of secret the scanner sees in free text (an agent's summary), never the values."""
    lines = text.split("\n")
    diff = f"+++ b/text\n@@ -0,0 +1,{len(lines)} @@\n" + "\n".join("+" + line for line in lines)
    return sorted({finding.kind for finding in scan_unified_diff(diff)})


def withhold_secrets(text: str) -> str:
    """`text`, or a notice in its place when it holds a secret (summaries go into commits and PRs)."""
    kinds = secret_kinds(text) if text else []
    if not kinds:
        return text
    log.warning("summary.withheld", kinds=kinds)
    return WITHHELD.format(kinds=", ".join(kinds))


# ------------------------------------------------------------------ verify
@dataclass(frozen=True)
class VerifyCommand:
    text: str          # as the user wrote it (shown in the pull request and to the agent)
    argv: list[str]


@dataclass(frozen=True)
class VerifyRun:
    command: VerifyCommand
    passed: bool
    how: str           # "exit code 0", "exit code 1 after the wall-clock timeout", "could not start: ..."
    output_tail: str
    duration_s: float
    log_path: Path

    def check(self) -> CheckResult:
        return CheckResult(f"verify: {self.command.text}", self.passed, f"{self.how}, {self.duration_s:.1f}s")


def verify_commands(configured: Sequence[str], from_task: Sequence[str]) -> list[VerifyCommand]:
    """daemon.yaml `verify` then the task's own, each split with shlex (no shell ever runs them)."""
    commands: list[VerifyCommand] = []
    for where, texts in (("config/daemon.yaml verify", configured), ("the task's verify", from_task)):
        for text in texts:
            commands.append(VerifyCommand(text, split_command(text, where)))
    return commands


def split_command(text: str, where: str) -> list[str]:
    """argv of one verify entry; a ConveyorError that says how to write it when it cannot be split."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConveyorError(f"{where}: cannot split {text!r} into arguments ({exc}); "
                            "close the quotes") from exc
    if not argv:
        raise ConveyorError(f"{where}: an empty command; remove it or write the command")
    return argv


Wrap = Callable[[list[str], Mapping[str, str]], tuple[list[str], Mapping[str, str]]]


def run_verify(commands: Sequence[VerifyCommand], *, worktree: Path, env: Mapping[str, str], log_dir: Path,
               label: str, timeout_s: float, stop: threading.Event | None = None,
               wrap: Wrap | None = None) -> list[VerifyRun]:
    """Run the commands in order until one fails; returns the runs made (the last one failed, if any).
    `wrap` turns a command's argv and environment into the contained ones (the sandbox): verify runs the
    agent's code."""
    runs: list[VerifyRun] = []
    for index, command in enumerate(commands, start=1):
        argv, run_env = wrap(command.argv, env) if wrap is not None else (command.argv, env)
        run = _run_one(command, argv, worktree, run_env, log_dir / f"{label}-verify-{index}.log", timeout_s, stop)
        log.info("verify.ran", command=command.text, passed=run.passed, how=run.how)
        runs.append(run)
        if not run.passed or (stop is not None and stop.is_set()):
            break
    return runs


def _run_one(command: VerifyCommand, argv: list[str], worktree: Path, env: Mapping[str, str], log_path: Path,
             timeout_s: float, stop: threading.Event | None) -> VerifyRun:
    try:
        result = run_command(argv, cwd=worktree, env=env, log_path=log_path, timeout_s=timeout_s,
                             stop=stop, check=False)
    except SpawnError as exc:
        return VerifyRun(command, False, f"could not start: {exc}", str(exc), 0.0, log_path)
    tail = printable(log_tail(log_path, OUTPUT_TAIL_BYTES)).strip()   # the agent's code printed it
    return VerifyRun(command, succeeded(result), ended_how(result), tail, result.duration_s, log_path)


def verify_feedback(run: VerifyRun, round_no: int, rounds: int) -> str:
    """What the agent is told when a verify command fails: the command, how it ended, its output tail."""
    output = run.output_tail or "(no output)"
    return "\n".join([
        f"The verify command `{run.command.text}` failed ({run.how}) on your change "
        f"(fix round {round_no} of {rounds}).",
        "Its output (the last lines):",
        "```",
        output,
        "```",
        "Fix the cause in the files of this directory. Do not change or skip the verify command, do not "
        "commit, and finish with a short summary of what you changed.",
    ])


def verify_failure(run: VerifyRun, rounds_used: int, note: str = "") -> GateFailure:
    """The task's error when verification still fails after the agent had its rounds to fix it."""
    after = f" after {rounds_used} fix round(s)" if rounds_used else ""
    extra = f"; {note}" if note else ""
    return GateFailure("verify", f"verify command `{run.command.text}` failed ({run.how}){after}{extra}")
