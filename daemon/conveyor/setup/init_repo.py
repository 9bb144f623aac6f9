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
    notes: list[str] = field(default_factory=list)    # what a person should know about where things went


def init_repository(repo: Path, *, board_dir: str = "work/collaboration", roadmap_file: str = "ROADMAP.md",
                    config_dir: Path | None = None) -> InitReport:
    report = InitReport()
    layout = BoardLayout(repo / board_dir)
    for folder in (layout.inbox, layout.assigned, layout.done, layout.archive):
        keep = folder / ".gitkeep"
        _write_once(keep, "", report, repo)
    config_dir = config_dir or repo / "config"
    theirs = _own_files(config_dir)
    for name in CONFIG_FILES:
        _write_once(config_dir / name, _initial_text(name), report, repo)
    roadmap = resources.files("conveyor").joinpath("defaults", "ROADMAP.md").read_text(encoding="utf-8")
    _write_once(repo / roadmap_file, roadmap, report, repo)
    _add_ignore_block(repo, board_dir, report)
    added = [name for name in CONFIG_FILES if _label(config_dir / name, repo) in report.created]
    if theirs and added:
        report.notes.append(
            f"{_label(config_dir, repo)}/ already held your own files ({', '.join(theirs[:4])}"
            f"{' …' if len(theirs) > 4 else ''}); Conveyor added {len(added)} of its own beside them "
            f"({', '.join(added)}) and reads only those. To keep them apart, delete them and run "
            "`conveyor init --config-dir .conveyor` (every command then remembers that folder).")
    return report


BOARD_COMMITTED = ("commit_board: true                # the board is part of the repository's history: "
                   "each transition\n                                  # (and a roadmap status line) is committed "
                   "on the base branch,\n                                  # so `git status` comes clean "
                   "(README, 'The board in git')")


def _initial_text(name: str) -> str:
    """What init writes: the built-in defaults, except that a repository set up by init commits its board."""
    text = builtin_text(name)
    if name != "daemon.yaml":
        return text
    lines = [BOARD_COMMITTED if line.startswith("commit_board:") else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _own_files(config_dir: Path) -> list[str]:
    """Files already in the configuration folder that are not Conveyor's (the user's own config/)."""
    if not config_dir.is_dir():
        return []
    return sorted(p.name for p in config_dir.iterdir() if p.name not in CONFIG_FILES)


def _label(path: Path, repo: Path) -> str:
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


def _write_once(path: Path, text: str, report: InitReport, repo: Path) -> None:
    label = _label(path, repo)
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
