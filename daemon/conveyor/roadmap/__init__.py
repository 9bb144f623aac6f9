"""ROADMAP.md as data: parse it, choose what runs next, and write progress back one line at a time.

Pure functions over text; watching the file, making tasks and writing to disk belong to the daemon.
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
