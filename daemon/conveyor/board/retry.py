"""`conveyor task retry ID`: a finished or failed task back into inbox/ as new, safe while the daemon runs.

The old file is parked under a dotted name in its folder, the new one written into inbox/ under its id
(never over another file), then the parked one removed: a crash in between leaves the parked copy, never
nothing. The previous outcome is kept in `retries:` so the history of the task survives on the board.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.core import yamlio
from conveyor.core.errors import ConveyorError

# What a run wrote into the file; a retried task starts without it, as if just submitted.
RUN_KEYS = ("result", "error", "completed_at", "assigned_at", "started_at", "claimed_by", "attempt", "interruptions",
            "follow_up_restarts")   # a retried follow-up may start over from a moved branch once again


def retry_task(layout: BoardLayout, task_id: str, now_iso: str) -> Path:
    """Move task `task_id` from done/ (or _rejected/) back into inbox/ as `status: new`; its new path."""
    found = board.find_task(layout, task_id)
    if found is None:
        raise ConveyorError(f"no task {task_id!r} on the board ({layout.root}); `conveyor status` lists them")
    if found.is_relative_to(layout.inbox) or found.is_relative_to(layout.assigned):
        where = "waits in inbox/" if found.is_relative_to(layout.inbox) else "is claimed (assigned/) and runs"
        raise ConveyorError(f"task {task_id!r} {where} already ({found}); nothing to retry")
    try:
        document = yamlio.loads(yamlio.read_limited(found))
    except yamlio.YamlProblem as exc:
        raise ConveyorError(f"{found} cannot be read ({exc}); fix it, then move it into inbox/ by hand") from exc
    if not isinstance(document, dict):
        raise ConveyorError(f"{found} is not a task (not a mapping); fix it, then move it into inbox/ by hand")
    # Out of done/ first (to a dotted name no scanner reads), so a running daemon never sees the task in
    # both places and rejects the retry as a duplicate; back if inbox/ already holds that name.
    parked = found.with_name(f".{found.name}.retry")
    os.rename(found, parked)
    target = board.create_task(layout, {**_fresh(document, now_iso), "id": task_id})
    if target is None:
        os.rename(parked, found)
        raise ConveyorError(f"inbox/{task_id}.yaml already exists; remove it or retry later")
    os.unlink(parked)
    report = found.with_name(found.name + ".error.yaml")
    report.unlink(missing_ok=True)     # a rejected file's report: the retry is the fix
    return target


def _fresh(document: dict[str, Any], now_iso: str) -> dict[str, Any]:
    previous = {"retried_at": now_iso, "status": document.get("status")}
    error = document.get("error")
    if isinstance(error, dict) and error.get("message"):
        previous["error"] = str(error["message"])[:500]
    if document.get("completed_at"):
        previous["completed_at"] = document["completed_at"]
    fresh = {key: value for key, value in document.items() if key not in RUN_KEYS}
    fresh["status"] = "new"
    history = fresh.get("retries")
    fresh["retries"] = [*(history if isinstance(history, list) else []), previous]
    return fresh
