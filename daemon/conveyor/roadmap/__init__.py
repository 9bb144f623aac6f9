"""ROADMAP.md as data: parse it, choose what runs next, and write progress back one line at a time.

The pure core (`lines`, `model`, `parse`, `select`, `edit`) works on text; `file` reads and writes
ROADMAP.md safely and `sync` turns items into tasks and task progress into status lines.

May import: core, config, board.
"""

from conveyor.roadmap.edit import (
    reapply_status,
    set_status,
    status_blocked,
    status_completed,
    status_edit_conflicts,
    status_in_progress,
    status_in_review,
)
from conveyor.roadmap.model import (
    ItemKind,
    Roadmap,
    RoadmapEditConflict,
    RoadmapEditError,
    RoadmapError,
    RoadmapItem,
    RoadmapItemNotFound,
    Status,
    classify_status,
)
from conveyor.roadmap.parse import parse_roadmap
from conveyor.roadmap.select import Selection, Waiting, count_in_flight, explain, next_runnable, to_json

__all__ = [
    "ItemKind",
    "Roadmap",
    "RoadmapEditConflict",
    "RoadmapEditError",
    "RoadmapError",
    "RoadmapItem",
    "RoadmapItemNotFound",
    "Selection",
    "Status",
    "Waiting",
    "classify_status",
    "count_in_flight",
    "explain",
    "next_runnable",
    "parse_roadmap",
    "reapply_status",
    "set_status",
    "status_blocked",
    "status_completed",
    "status_edit_conflicts",
    "status_in_progress",
    "status_in_review",
    "to_json",
]
