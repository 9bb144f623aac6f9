"""`conveyor task validate`: the seed workflow's schema check, in this project's words.

Beyond what the daemon needs to run a task, it checks what the board format promises: a documented
status, ISO 8601 UTC timestamps, a `result` block on done tasks and an `error` block on failed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.task import TASK_SUFFIXES, Task, line_of, parse_task
from conveyor.core.timeutil import parse_iso

STATUSES = ("new", "assigned", "in_progress", "done", "error")
TIMESTAMPS = ("created_at", "assigned_at", "started_at", "completed_at")


@dataclass
class FileReport:
    path: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def collect(paths: list[Path]) -> list[Path]:
    """Task files named directly, or found under named folders (error reports are skipped)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in TASK_SUFFIXES
                                and not p.name.endswith(".error.yaml") and not p.is_dir()))
        else:
            files.append(path)
    return files


def validate_file(path: Path) -> FileReport:
    report = FileReport(path)
    try:
        task = parse_task(path)
    except TaskFileError as exc:
        report.errors.extend(exc.problems)
        return report
    except OSError as exc:
        report.errors.append(Problem(str(path), f"cannot be read ({exc.strerror})"))
        return report
    report.warnings.extend(task.warnings)
    report.warnings.extend(_format_checks(task))
    return report


def _format_checks(task: Task) -> list[Problem]:
    name, text = str(task.path), _text(task.path)
    problems = []
    status = task.data.get("status")
    if status is None:
        problems.append(Problem(name, "is missing", "add `status: new`", field="status"))
    elif str(status) not in STATUSES:
        problems.append(Problem(name, f"{status!r} is not a documented status (the folder decides in inbox/)",
                                f"use one of {', '.join(STATUSES)}", field="status", line=line_of(text, "status")))
    for key in TIMESTAMPS:
        value = task.data.get(key)
        if value is not None and (not isinstance(value, str) or parse_iso(value) is None
                                  or not value.endswith("Z")):
            problems.append(Problem(name, f"{value!r} is not an ISO 8601 UTC timestamp",
                                    'write it like "2026-11-23T09:00:00Z"', field=key, line=line_of(text, key)))
    if status == "done" and not isinstance(task.data.get("result"), dict):
        problems.append(Problem(name, "is missing on a done task", "add a `result:` block with a `summary:`",
                                field="result"))
    if status == "error" and not isinstance(task.data.get("error"), dict):
        problems.append(Problem(name, "is missing on a failed task", "add an `error:` block with a `message:`",
                                field="error"))
    return problems


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
