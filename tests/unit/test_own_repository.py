"""This repository runs Conveyor on itself: its own config must load and its board must validate."""

from __future__ import annotations

from tests.conftest import REPO_ROOT

from conveyor.board.validate import collect, validate_file
from conveyor.config import load_config
from conveyor.workspace import git


def test_this_repositorys_configuration_loads() -> None:
    config = load_config(REPO_ROOT, git.common_git_dir(REPO_ROOT))
    assert config.daemon.roadmap.file == "roadmap/ROADMAP.md"
    assert (REPO_ROOT / config.daemon.roadmap.file).is_file()
    assert config.board_root == REPO_ROOT / "work" / "collaboration"
    assert all((config.board_root / folder).is_dir() for folder in ("inbox", "assigned", "done", "archive"))


def test_this_repositorys_board_validates() -> None:
    reports = [validate_file(path) for path in collect([REPO_ROOT / "work" / "collaboration"])]
    assert [report.path for report in reports if not report.ok] == []
