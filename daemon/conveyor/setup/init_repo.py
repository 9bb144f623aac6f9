"""`conveyor init`: working defaults written into a repository, safe to run any number of times.

Nothing existing is overwritten: missing folders and files are created, present ones are reported as
kept, and the ignore block is added once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from conveyor.board.layout import BoardLayout
from conveyor.config import CONFIG_FILES, builtin_text

IGNORE_MARKER = "# conveyor: temporary and editor files on the task board"


@dataclass
class InitReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def init_repository(repo: Path, *, board_dir: str = "work/collaboration", roadmap_file: str = "ROADMAP.md",
                    config_dir: Path | None = None) -> InitReport:
    report = InitReport()
    layout = BoardLayout(repo / board_dir)
    for folder in (layout.inbox, layout.assigned, layout.done, layout.archive):
        keep = folder / ".gitkeep"
        _write_once(keep, "", report, repo)
    config_dir = config_dir or repo / "config"
    for name in CONFIG_FILES:
        _write_once(config_dir / name, builtin_text(name), report, repo)
    roadmap = resources.files("conveyor").joinpath("defaults", "ROADMAP.md").read_text(encoding="utf-8")
    _write_once(repo / roadmap_file, roadmap, report, repo)
    _add_ignore_block(repo, board_dir, report)
    return report


def _write_once(path: Path, text: str, report: InitReport, repo: Path) -> None:
    label = str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)
    if path.exists():
        report.kept.append(label)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    report.created.append(label)


def _add_ignore_block(repo: Path, board_dir: str, report: InitReport) -> None:
    ignore = repo / ".gitignore"
    current = ignore.read_text(encoding="utf-8") if ignore.exists() else ""
    if IGNORE_MARKER in current:
        report.kept.append(".gitignore (conveyor entries)")
        return
    block = "\n".join([IGNORE_MARKER, f"{board_dir}/**/.*.tmp", f"{board_dir}/**/*.tmp",
                       f"{board_dir}/**/*~", f"{board_dir}/**/*.swp", ""])
    separator = "" if not current or current.endswith("\n") else "\n"
    ignore.write_text(current + separator + ("\n" if current else "") + block, encoding="utf-8")
    report.created.append(".gitignore (conveyor entries)")
