"""The task file: what people write into `inbox/`, validated without losing a byte of their meaning.

A task keeps the author's document as an ordered dict (`data`) so every rewrite preserves their keys,
order and values; typed accessors read the documented fields. Validation separates errors (the file
cannot be run: it is rejected with a message naming field, line and fix) from warnings (it runs, and the
warning is logged).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from conveyor.core import yamlio
from conveyor.core.errors import Problem, TaskFileError
from conveyor.core.follow_up import FollowUp, follow_up_problems, read_follow_up
from conveyor.core.printable import printable


class TaskStatus(StrEnum):
    """The upstream workflow's lifecycle: new → assigned → in_progress → done | error | blocked."""

    NEW = "new"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    ERROR = "error"
    BLOCKED = "blocked"


CLAIMER_PREFIX = "conveyor@"   # `claimed_by` of every task Conveyor runs: conveyor@<host>:<pid>

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SAFE_NAME_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit, at most 128 characters"
TASK_SUFFIXES = (".yaml", ".yml")
PRIORITY_RANK = {"critical": 0, "high": 1, "medium": 2, "normal": 3, "low": 4}
COMPLEXITIES = ("low", "medium", "high")
# Keys whose content describes the work: they belong in the agent's instructions (seed-board README).
WORK_KEYS = ("requirements", "acceptance_criteria", "deliverables", "constraints", "notes", "specification",
             "success_criteria", "implementation_notes", "technical_notes", "scope")


_PROSE_KEYS = frozenset({"description", "type", "reason", "notes", "note", "why"})


def dependency_ids(value: Any) -> list[str]:
    """The task ids in a `dependencies` value, whatever shape the author gave it; prose (anything with a
    space, or under `description`-like keys) is no id."""
    if isinstance(value, str):
        return [value] if SAFE_NAME.match(value) else []
    if isinstance(value, Mapping):
        if isinstance(value.get("task_id"), str):
            return dependency_ids(value["task_id"])
        return [dep for key, item in value.items() if str(key) not in _PROSE_KEYS for dep in dependency_ids(item)]
    if isinstance(value, list):
        return [dep for item in value for dep in dependency_ids(item)]
    return []


def is_conveyor_claim(data: Mapping[str, Any]) -> bool:
    """Whether a task file says some Conveyor claimed it (`claimed_by: conveyor@<host>:<pid>`)."""
    return str(data.get("claimed_by") or "").startswith(CLAIMER_PREFIX)


def claim_host(data: Mapping[str, Any]) -> str | None:
    """The host of a Conveyor claim (`conveyor@<host>:<pid>`), or None for anyone else's."""
    if not is_conveyor_claim(data):
        return None
    return str(data["claimed_by"])[len(CLAIMER_PREFIX):].rpartition(":")[0] or None


def task_id_from_path(path: Path) -> str:
    """The id a file name implies: the name without its `.yaml`/`.yml` suffix."""
    return path.name[: -len(path.suffix)] if path.suffix in TASK_SUFFIXES else path.name


def is_task_name(name: str) -> bool:
    """Whether a directory entry is a candidate task file (editor temp files and dotfiles are not)."""
    if name.startswith(".") or name.endswith(("~", ".tmp", ".swp", ".swx", ".part")):
        return False
    return name.endswith(TASK_SUFFIXES)


def line_of(text: str, key: str) -> int | None:
    """1-based line of a top-level `key:` in the document text, for error messages."""
    match = re.search(rf"^{re.escape(key)}\s*:", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


@dataclass
class Task:
    """A validated task file: the author's document plus typed views of the documented fields."""

    path: Path
    data: dict[str, Any]
    warnings: list[Problem] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def agent(self) -> str:
        return str(self.data["agent"])

    @property
    def title(self) -> str:
        title = self.data.get("title")
        return str(title) if title else self.id

    @property
    def priority(self) -> str:
        value = str(self.data.get("priority") or "normal").lower()
        return value if value in PRIORITY_RANK else "normal"

    @property
    def priority_rank(self) -> int:
        return PRIORITY_RANK[self.priority]

    @property
    def artefacts(self) -> list[str]:
        value = self.data.get("artefacts", self.data.get("artifacts"))
        if isinstance(value, str):
            return [value]
        return [str(item) for item in value] if isinstance(value, list) else []

    @property
    def dependencies(self) -> list[str]:
        """Ids this task waits for: top-level `dependencies` and `context.dependencies` (where the upstream
        template puts them), each a list of ids, a list of `{task_id: ...}` entries or a mapping of those."""
        found: list[str] = []
        for value in (self.data.get("dependencies"), self.context.get("dependencies")):
            found.extend(dependency_ids(value))
        return list(dict.fromkeys(found))

    @property
    def complexity(self) -> str | None:
        value = self.data.get("complexity")
        return value.lower() if isinstance(value, str) and value.lower() in COMPLEXITIES else None

    @property
    def context(self) -> dict[str, Any]:
        value = self.data.get("context")
        if isinstance(value, Mapping):
            return dict(value)
        return {"notes": [value]} if isinstance(value, str) and value.strip() else {}

    @property
    def base_branch(self) -> str | None:
        branch = self.context.get("branch")
        return str(branch) if isinstance(branch, str) and branch.strip() else None

    @property
    def follow_up(self) -> FollowUp | None:
        """The PR this task follows up (core.follow_up), or None for an ordinary task."""
        return read_follow_up(self.data.get("follow_up"))

    @property
    def attempt(self) -> int:
        value = self.data.get("attempt")
        return value if isinstance(value, int) and value >= 0 else 0

    def get_str(self, key: str) -> str | None:
        value = self.data.get(key)
        return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None

    def get_number(self, key: str) -> float | None:
        value = self.data.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def get_list(self, key: str) -> list[str]:
        value = self.data.get(key)
        return [str(item) for item in value] if isinstance(value, list) else []

    @property
    def created_at(self) -> str:
        value = self.data.get("created_at") or self.data.get("created")
        return str(value) if value else ""


def parse_task(path: Path, *, expected_id: str | None = None, max_bytes: int = yamlio.MAX_FILE_BYTES,
               busy: Callable[[int], bool | None] | None = None) -> Task:
    """Read and validate a task file; raise TaskFileError naming every problem with field, line and fix.

    `busy` is passed to `yamlio.read_limited` (which raises StillBeingWritten when it says so).
    """
    name = str(path)
    try:
        raw = yamlio.read_limited(path, max_bytes, busy=busy)
        document = yamlio.loads(raw)
    except yamlio.YamlProblem as exc:
        raise TaskFileError([Problem(name, exc.message, exc.fix, line=exc.line)]) from exc
    text = raw.decode("utf-8", errors="replace")
    return validate_document(path, document, text, expected_id=expected_id)


def validate_document(path: Path, document: Any, text: str, *, expected_id: str | None = None) -> Task:
    """Check a loaded document against the task format; see `parse_task`."""
    name = str(path)
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise TaskFileError([Problem(name, f"is {kind}, not a mapping of fields",
                                     "write `key: value` lines, at least `id:` and `agent:`")])
    # pydantic is imported only once a task is validated: `conveyor status` of an empty inbox never is
    from conveyor.core.task_fields import type_errors

    errors = type_errors(name, document, text) + _identity_errors(name, document, text, path, expected_id)
    errors += follow_up_problems(name, document, line_of(text, "follow_up"), SAFE_NAME, branch_name_problem)
    if errors:
        raise TaskFileError(errors)
    return Task(path=path, data=document, warnings=_warnings(name, document, text))


def _identity_errors(name: str, document: dict[str, Any], text: str, path: Path,
                     expected_id: str | None) -> list[Problem]:
    problems = []
    # a number is accepted as an id (it becomes its string), so it must pass the same checks as one
    task_id, agent = (str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
                      for value in (document.get("id"), document.get("agent")))
    if isinstance(task_id, str):
        if not SAFE_NAME.match(task_id):
            problems.append(Problem(name, f"{task_id!r} is not a safe id", f"use only {SAFE_NAME_RULE}",
                                    field="id", line=line_of(text, "id")))
        else:
            why = branch_name_problem(task_id)
            if why is not None:
                problems.append(Problem(name, f"{task_id!r} cannot be part of the branch name conveyor/{task_id} "
                                        f"({why})", "rename the file and its `id:` without '..', a trailing '.' "
                                        "or a trailing '.lock'", field="id", line=line_of(text, "id")))
        wanted = expected_id if expected_id is not None else task_id_from_path(path)
        if task_id != wanted:
            problems.append(Problem(name, f"is {task_id!r} but the file is named {path.name!r}",
                                    f"rename the file to {task_id}.yaml or set `id: {wanted}`",
                                    field="id", line=line_of(text, "id")))
    title = document.get("title")
    if "title" in document and (title is None or (isinstance(title, str) and not printable(title).split())):
        problems.append(Problem(name, "is blank", "write a one-line title, or leave `title:` out for the id to "
                                "stand in", field="title", line=line_of(text, "title")))
    if isinstance(agent, str) and not SAFE_NAME.match(agent):
        problems.append(Problem(name, f"{agent!r} is not a safe agent name", f"use only {SAFE_NAME_RULE}",
                                field="agent", line=line_of(text, "agent")))
    return problems


def branch_name_problem(task_id: str) -> str | None:
    """Why `conveyor/<task_id>` breaks git's ref name rules (`git check-ref-format`), for an id that is
    already a SAFE_NAME (so only these can fail); None when git accepts it."""
    if ".." in task_id:
        return "git refuses '..' in a branch name"
    if task_id.endswith(".lock"):
        return "git refuses a branch name ending in '.lock'"
    if task_id.endswith("."):
        return "git refuses a branch name ending in '.'"
    return None


def _warnings(name: str, document: dict[str, Any], text: str) -> list[Problem]:
    warnings = []
    if "artefacts" not in document and "artifacts" not in document:
        warnings.append(Problem(name, "is missing; the agent gets no list of files to touch",
                                "add `artefacts: [path, ...]` (or `artefacts: []`)", field="artefacts"))
    priority = document.get("priority")
    if priority is not None and str(priority).lower() not in PRIORITY_RANK:
        warnings.append(Problem(name, f"{priority!r} is not a known priority; treated as normal",
                                "use critical, high, medium, normal or low", field="priority",
                                line=line_of(text, "priority")))
    complexity = document.get("complexity")
    if complexity is not None and str(complexity).lower() not in COMPLEXITIES:
        warnings.append(Problem(name, f"{complexity!r} is not a known complexity; estimated instead",
                                "use low, medium or high", field="complexity", line=line_of(text, "complexity")))
    deps = document.get("dependencies")
    if isinstance(deps, list):
        for dep in deps:
            if not dependency_ids(dep):
                warnings.append(Problem(name, f"entry {_short(dep)} is not a task id; ignored",
                                        "list only ids of other tasks", field="dependencies",
                                        line=line_of(text, "dependencies")))
    elif isinstance(deps, Mapping) and not dependency_ids(deps):
        warnings.append(Problem(name, "names no task id (only prose); ignored",
                                "list ids of other tasks, e.g. `dependencies: [<task id>]`",
                                field="dependencies", line=line_of(text, "dependencies")))
    return warnings


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def new_task_document(*, task_id: str, agent: str, title: str, description: str, artefacts: list[str],
                      priority: str = "normal", dependencies: list[str] | None = None,
                      created_at: str, created_by: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A fresh task document in the board's key order (used by `submit`, hand-offs and the roadmap)."""
    document: dict[str, Any] = {"id": task_id, "agent": agent, "status": "new", "title": title,
                                "description": description, "artefacts": list(artefacts),
                                "priority": priority, "dependencies": list(dependencies or [])}
    document.update(extra or {})
    document["created_at"] = created_at
    document["created_by"] = created_by
    return document


def slugify(text: str, limit: int = 40) -> str:
    """A file-name-safe slug of a title for task ids."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "task"
