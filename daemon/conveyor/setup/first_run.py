"""What the next `conveyor run` will start, said before it spends anything (`init` and `doctor` print it).

A person's repository may already hold a ROADMAP.md with Planned items and task files on the board; the
first run must not start any of them by surprise.
"""

from __future__ import annotations

from conveyor.board import layout as board
from conveyor.board.layout import BoardLayout
from conveyor.config import Config
from conveyor.core.task import task_id_from_path
from conveyor.roadmap.file import read_roadmap
from conveyor.roadmap.model import RoadmapError, Status
from conveyor.roadmap.select import count_in_flight, next_runnable


def first_run_lines(config: Config) -> list[str]:
    """Sentences saying which tasks and roadmap items the next `conveyor run` starts (or why none)."""
    lines = _task_lines(BoardLayout(config.board_root))
    lines.extend(_roadmap_lines(config))
    return lines


def _task_lines(layout: BoardLayout) -> list[str]:
    waiting = [task_id_from_path(p) for p in board.inbox_entries(layout)] if layout.inbox.is_dir() else []
    claimed = sorted(task_id_from_path(p) for p in board.task_files(layout.assigned)) \
        if layout.assigned.is_dir() else []
    lines = []
    if waiting:
        lines.append(f"starts the {len(waiting)} task(s) in inbox/: {', '.join(sorted(waiting)[:5])}"
                     + (" …" if len(waiting) > 5 else ""))
    if claimed:
        lines.append(f"resumes the {len(claimed)} task(s) in assigned/: {', '.join(claimed[:5])}"
                     + (" …" if len(claimed) > 5 else ""))
    if not waiting and not claimed:
        lines.append("no task is waiting: it starts what you submit (`conveyor submit` or a file in inbox/)")
    return lines


def _roadmap_lines(config: Config) -> list[str]:
    settings = config.daemon.roadmap
    path = config.repo / settings.file
    try:
        read = read_roadmap(path)
    except (RoadmapError, OSError) as exc:
        return [f"cannot read {settings.file} ({exc}); the roadmap starts nothing"]
    if read is None:
        return [f"no {settings.file}: the roadmap starts nothing"]
    roadmap = read[1]
    planned = [item for item in roadmap if item.status is Status.PLANNED]
    if not settings.enabled:
        if not planned:
            return [f"roadmap off (roadmap.enabled: false): {settings.file} is never read or changed"]
        names = ", ".join(item.label for item in planned[:3]) + (" …" if len(planned) > 3 else "")
        return [f"roadmap off (roadmap.enabled: false): the {len(planned)} Planned item(s) of {settings.file} "
                f"({names}) do not start; set `roadmap: {{enabled: true}}` in {_daemon_yaml(config)} to let "
                "the daemon start them (each one is an agent run: it spends money)"]
    selection = next_runnable(roadmap, in_flight_limit=settings.max_in_flight, in_flight=count_in_flight(roadmap))
    if not selection.start:
        return [f"roadmap on: no item of {settings.file} starts now (`conveyor roadmap` says why)"]
    names = ", ".join(item.label for item in selection.start)
    return [f"roadmap on: starts {names} from {settings.file} at once and rewrites its **Status** line "
            f"(set `roadmap: {{enabled: false}}` in {_daemon_yaml(config)} to stop that)"]


def _daemon_yaml(config: Config) -> str:
    path = config.config_dir / "daemon.yaml"
    return str(path.relative_to(config.repo)) if path.is_relative_to(config.repo) else str(path)

