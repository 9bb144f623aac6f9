"""Set-up for the PR watcher tests: a real task whose real pull request (real git, real push, FakeGitHub over
HTTP on 127.0.0.1) was opened by the daemon, and a watcher over that repository's board and state folder.

`watcher()` makes a fresh PullWatcher each time, as a restarted daemon would: nothing is kept in memory
between two of them, only what the state folder, the board and telemetry hold.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.board.layout import BoardLayout
from conveyor.pipeline.pr_watch import PullWatcher
from conveyor.telemetry.store import Telemetry
from tests.conftest import git
from tests.integration.gate_support import GH_REPO, TOKEN, TOKEN_ENV, Project, daemon_yaml, make_project
from tests.support.agent_script import work
from tests.support.fake_github import FakeGitHub

TASK = "t-1"
WORK = work({"app.py": "def main():\n    return 1\n"}, "Added main() to app.py")
ROADMAP = """\
# Roadmap

### 🔴 **PRIORITY 1: First thing**

**Status**: 📝 Planned
**Agent**: backend-dev

Do the first thing.
"""
ROADMAP_TASK = "roadmap-1-first-thing"


@dataclass
class Clock:
    now: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def configure(project: Project, *, roadmap: bool = False, **follow_up: Any) -> None:
    """daemon.yaml of the gate tests, with the watcher on (and the roadmap when asked)."""
    assert project.github is not None
    text = daemon_yaml(remote="origin", api_url=project.github.api_url)
    if roadmap:
        text = text.replace("roadmap: {enabled: false}", "roadmap: {enabled: true}")
    settings = {"enabled": True, "permitted": [], "max_ci_fixes": 2, "poll_interval_s": 300, **follow_up}
    text += "follow_up: " + json.dumps(settings) + "\n"
    project.repo.write_config("daemon.yaml", text)


def opened(root: Path, github: FakeGitHub, *, roadmap: bool = False, **follow_up: Any) -> Project:
    """A project whose task (or roadmap item) ran through the real daemon and opened pull request #1."""
    project = make_project(root, with_remote=True, github=github)
    configure(project, roadmap=roadmap, **follow_up)
    if roadmap:
        (project.repo.path / "ROADMAP.md").write_text(ROADMAP, encoding="utf-8")
        project.script(ROADMAP_TASK, WORK)
    else:
        project.script(TASK, WORK)
        project.repo.submit(TASK, description="Add a main function to app.py.")
    run = project.run()
    assert run.code == 0
    task = ROADMAP_TASK if roadmap else TASK
    assert project.repo.done_doc(task)["result"]["pr_url"].endswith(f"/{GH_REPO}/pull/1")
    return project


def watcher(project: Project, clock: Clock, *, on_merged: Any = None) -> PullWatcher:
    config = project.repo.config()
    telemetry = Telemetry(config.telemetry_db)
    return PullWatcher(lambda: config, {TOKEN_ENV: TOKEN}, BoardLayout(config.board_root), telemetry, clock,
                       on_merged=on_merged)


def outcomes(watcher: PullWatcher, number: int = 1) -> dict[str, str]:
    """Event id → what the watcher did with it (task, ignored, own, skipped, ...), from its state file."""
    conn = sqlite3.connect(watcher.state.path)
    try:
        rows = conn.execute("SELECT event_id, outcome FROM events WHERE number = ?", (number,)).fetchall()
    finally:
        conn.close()
    return {str(event): str(outcome) for event, outcome in rows}


def inbox_tasks(project: Project) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(project.repo.inbox.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        found[path.stem] = document
    return found


def push_commit(project: Project, branch: str, name: str) -> str:
    """A new commit on the PR's branch in origin (as the runner's push would): the head moves."""
    assert project.origin is not None
    work = project.repo.path.parent / f"push-{name}"
    if not work.exists():
        git(project.repo.path.parent, "clone", "-q", "-b", branch, str(project.origin), str(work))
    else:
        git(work, "pull", "-q", "origin", branch)
    (work / f"{name}.txt").write_text(textwrap.dedent(f"{name}\n"), encoding="utf-8")
    git(work, "add", "-A")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", name)
    git(work, "push", "-q", "origin", branch)
    return git(work, "rev-parse", "HEAD").strip()
