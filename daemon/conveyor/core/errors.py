"""Domain errors: each carries a plain sentence a user can act on.

Deep code raises these; one top-level handler (the CLI) turns them into exit codes and messages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: where it is, what is wrong, and how to fix it."""

    file: str
    message: str
    fix: str = ""
    field: str | None = None
    line: int | None = None

    def render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" field '{self.field}':" if self.field else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{where}:{field} {self.message}.{fix}".replace("..", ".")

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field,
                "message": self.message, "fix": self.fix}


class ConveyorError(Exception):
    """Base class: the message is a sentence for the user, not a traceback."""


class ProblemsError(ConveyorError):
    """An input was rejected for one or more problems, each with file, field, line and fix."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))


class TaskFileError(ProblemsError):
    """A task file cannot be read as a valid task."""


class ConfigError(ProblemsError):
    """A configuration file is missing, malformed or inconsistent."""


class GitError(ConveyorError):
    """A git operation failed; the message says what to do about it."""


class LockHeld(ConveyorError):
    """Another daemon already serves this repository."""


class ToolUnavailable(ConveyorError):
    """An agent CLI is not installed, not logged in or paused."""
