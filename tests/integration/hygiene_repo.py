"""A repository for the board-hygiene tests: `conveyor init` done, the fake agent (tests/support/fake_agent.py)
serving every agent, ROADMAP.md handling on, and helpers to read the roadmap, the board and the run log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import DAEMON_CORE, LOCAL_ONLY, Repo, make_repo

DAEMON_YAML = DAEMON_CORE + LOCAL_ONLY          # the roadmap line is each test's
ROADMAP_ON = "roadmap: {enabled: true, default_agent: backend-dev, max_in_flight: 1}\n"
ROADMAP_OFF = "roadmap: {enabled: false}\n"
AGENTS_YAML = "agents:\n  default:\n    tool: fake\n"


def hygiene_repo(root: Path, *, daemon_extra: str = ROADMAP_ON, agents_yaml: str = AGENTS_YAML) -> Repo:
    repo = make_repo(root)
    repo.write_config("daemon.yaml", DAEMON_YAML + daemon_extra)
    repo.write_config("agents.yaml", agents_yaml)
    return repo


def agent_runs(repo: Repo) -> list[str]:
    """Task ids in the order the fake agent started them."""
    return repo.agent.started()


def roadmap_path(repo: Repo) -> Path:
    return repo.path / "ROADMAP.md"


def board_files(repo: Repo, prefix: str = "") -> list[Path]:
    """Every task file on the board (any folder, `_rejected` included) whose name starts with `prefix`."""
    return sorted(p for p in repo.board.rglob(f"{prefix}*.y*ml") if not p.name.endswith(".error.yaml"))


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document
