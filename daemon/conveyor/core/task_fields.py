"""The types of a task file's documented fields, checked with pydantic.

Apart from `core.task` so that importing the task model costs nothing: `conveyor status` on a board with
an empty inbox never validates a task and never imports pydantic.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.core.errors import Problem
from conveyor.core.task import line_of


class Fields(BaseModel):
    """Types of the documented fields; everything else the author wrote is kept as-is."""

    model_config = ConfigDict(extra="allow", strict=False, coerce_numbers_to_str=True)

    id: str
    agent: str
    status: str | None = None
    title: str | None = None
    priority: str | None = None
    artefacts: list[str] | str | None = None
    dependencies: list[Any] | dict[str, Any] | None = None   # ids, {task_id: ...} entries or a mapping
    complexity: str | None = None
    context: dict[str, Any] | str | None = None
    tool: str | None = None
    model: str | None = None
    verify: list[str] | None = None
    expect_changes: bool | None = None
    max_cost_usd: float | None = None
    max_turns: int | None = None
    timeout_s: float | None = None


def type_errors(name: str, document: dict[str, Any], text: str) -> list[Problem]:
    try:
        Fields.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else None
            where = ".".join(str(part) for part in error["loc"])
            if error["type"] == "missing":
                problems.append(Problem(name, "is missing", _fix_for_missing(key), field=key))
            else:
                problems.append(Problem(name, f"{error['msg'].lower()} (at {where})",
                                        _fix_for_type(key), field=key, line=line_of(text, key or "")))
        return problems
    return []


def _fix_for_missing(key: str | None) -> str:
    if key == "id":
        return "add `id: <the file name without .yaml>`"
    if key == "agent":
        return "add `agent: <agent name>`, e.g. `agent: backend-dev`"
    return f"add `{key}:`"


def _fix_for_type(key: str | None) -> str:
    fixes = {
        "artefacts": "write a list of paths, e.g. `artefacts: [src/app.py]`",
        "dependencies": "write a list of task ids, e.g. `dependencies: [2026-11-23T0900-backend-dev-api]`",
        "verify": "write a list of commands, e.g. `verify: [\"pytest -q\"]`",
        "context": "write a mapping, e.g. `context: {branch: main, notes: [...]}`",
    }
    return fixes.get(key or "", "use the type the task format documents for this field")
