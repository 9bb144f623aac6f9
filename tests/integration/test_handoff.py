"""Hand-offs: an agent that ends with `NEXT_AGENT: ...` gets its work continued by a new task, exactly once,
starting from its branch, and `run --once` runs that task in the same run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conveyor.board import handoff_tasks
from conveyor.board.index import BoardIndex
from conveyor.board.layout import BoardLayout
from conveyor.core.task import SAFE_NAME, Task, new_task_document
from conveyor.daemon.periodic import Periodic
from conveyor.daemon.upkeep import Snapshot, Upkeep
from conveyor.telemetry.store import Telemetry
from tests.integration.hygiene_repo import ROADMAP_OFF, agent_runs, board_files, hygiene_repo, load

PARENT = "2026-11-23T0900-backend-dev-feature"
FOLLOWUP = f"{PARENT}-followup-reviewer"
SCRIPT = """\
Build the feature.
FAKE write src/feature.txt built
FAKE print Built the feature.
FAKE print NEXT_AGENT: reviewer
FAKE print NEXT_TASK_TITLE: Review the feature
FAKE print NEXT_TASK_NOTES: FAKE require src/feature.txt
FAKE print FAKE write review.md looks good
"""


def test_a_hand_off_becomes_a_follow_up_that_runs_in_the_same_once_run(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    repo.submit(PARENT, description=SCRIPT, artefacts=["src/feature.txt"], priority="high",
                context={"notes": ["keep the public API"]})
    run = repo.run_once()
    assert run.code == 0
    parent = load(repo.done_path(PARENT))
    assert parent["status"] == "done" and parent["result"]["next_agent"] == "reviewer"
    assert agent_runs(repo) == [PARENT, FOLLOWUP]
    follow = load(repo.done_path(FOLLOWUP, agent="reviewer"))
    assert follow["status"] == "done", follow.get("error")
    assert follow["agent"] == "reviewer" and follow["title"] == "Review the feature"
    assert follow["dependencies"] == [PARENT] and follow["created_by"] == PARENT
    assert follow["priority"] == "high" and follow["artefacts"] == ["src/feature.txt"]
    assert follow["context"] == {"notes": ["keep the public API"], "previous_task": PARENT,
                                 "previous_agent": "backend-dev", "branch": f"conveyor/{PARENT}"}
    assert follow["description"].startswith("FAKE require src/feature.txt\nFAKE write review.md looks good")
    assert f"This continues task {PARENT}" in follow["description"]
    assert "NEXT_AGENT" not in follow["description"]       # the next agent is not handed a hand-off to copy
    # the follow-up started from its parent's branch: both changes are on its branch
    branch = f"conveyor/{FOLLOWUP}"
    assert repo.git("show", f"{branch}:src/feature.txt") == "built"
    assert repo.git("show", f"{branch}:review.md") == "looks good"
    log = (repo.board / "WORKFLOW_LOG.md").read_text(encoding="utf-8")
    assert f"| handoff | {FOLLOWUP} | reviewer | from {PARENT} |" in log

    repo.run_once()                                        # finishing is not repeated: nothing new
    assert agent_runs(repo) == [PARENT, FOLLOWUP]
    assert len(board_files(repo, PARENT)) == 2
    assert load(repo.done_path(PARENT))["result"]["handoff_task"] == FOLLOWUP


def test_a_hand_off_owed_by_a_daemon_that_died_after_done_is_made_at_start_up(tmp_path: Path) -> None:
    """The worker moves a task to done/; the loop makes its hand-off a moment later. A daemon killed in
    between leaves a done parent naming `next_agent` and no follow-up: the next start makes it, once, and a
    follow-up the user then deletes stays deleted."""
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    repo.submit(PARENT, description=SCRIPT, artefacts=["src/feature.txt"])
    repo.run_once()
    parent_path = repo.done_path(PARENT)
    follow_path = repo.done_path(FOLLOWUP, agent="reviewer")
    # Put the board back as the kill would have left it: the parent done without the mark, no follow-up.
    follow_path.unlink()
    text = parent_path.read_text(encoding="utf-8")
    parent_path.write_text(text.replace(f"  handoff_task: {FOLLOWUP}\n", ""), encoding="utf-8")
    assert "handoff_task" not in load(parent_path)["result"]
    # A task another orchestrator finished (a board adopted from the seed workflow): its hand-off was
    # that orchestrator's business, long ago.
    seed_done = repo.board / "done" / "curator" / "2026-02-12T0911-curator-old.yaml"
    seed_done.parent.mkdir(parents=True, exist_ok=True)
    seed_done.write_text("id: 2026-02-12T0911-curator-old\nagent: curator\nstatus: done\n"
                         "result:\n  summary: done\n  next_agent: writer-editor\n", encoding="utf-8")
    run = repo.run_once()
    assert run.code == 0
    assert [e["task_id"] for e in run.events("handoff.owed")] == [PARENT]
    assert load(follow_path)["status"] == "done"          # made and run in the same --once run
    assert load(parent_path)["result"]["handoff_task"] == FOLLOWUP
    follow_path.unlink()                                   # the user does not want it after all
    again = repo.run_once()
    assert again.events("handoff.owed") == [] and not follow_path.exists()
    assert agent_runs(repo) == [PARENT, FOLLOWUP, FOLLOWUP]
    assert board_files(repo, "2026-02-12T0911-curator-old") == [seed_done]


def parent_task(tmp_path: Path, **result: object) -> Task:
    document = new_task_document(task_id=PARENT, agent="backend-dev", title="Feature", description="d",
                                 artefacts=["a.py"], created_at="2026-11-23T09:00:00Z", created_by="t")
    document.update({"status": "done", "result": {"summary": "s", "branch": None, **result}})
    return Task(tmp_path / f"{PARENT}.yaml", document)


@pytest.mark.parametrize("where", ["inbox", "assigned/reviewer", "done/reviewer", "archive/2026-11",
                                   "done/_rejected"])
def test_a_follow_up_already_anywhere_on_the_board_is_not_made_again(tmp_path: Path, where: str) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    existing = layout.root / where / f"{FOLLOWUP}.yaml"
    existing.parent.mkdir(parents=True, exist_ok=True)
    existing.write_text("id: x\n", encoding="utf-8")
    assert handoff_tasks.create_handoff(layout, parent_task(tmp_path, next_agent="reviewer"), "now") is None
    assert list(layout.inbox.glob("*.yaml")) == ([existing] if where == "inbox" else [])
    assert existing.read_text(encoding="utf-8") == "id: x\n"


def test_hand_off_refusals(tmp_path: Path) -> None:
    layout = BoardLayout(tmp_path / "board")
    layout.ensure()
    with capture_logs() as logs:
        assert handoff_tasks.create_handoff(layout, parent_task(tmp_path, next_agent="not a name!"), "now") is None
        deep = parent_task(tmp_path, next_agent="reviewer")
        deep.data[handoff_tasks.DEPTH_KEY] = handoff_tasks.MAX_DEPTH
        assert handoff_tasks.create_handoff(layout, deep, "now") is None
        assert handoff_tasks.create_handoff(layout, parent_task(tmp_path), "now") is None
    assert [e["event"] for e in logs] == ["handoff.bad_agent", "handoff.too_deep"]
    assert list(layout.inbox.iterdir()) == []
    made = handoff_tasks.create_handoff(layout, parent_task(tmp_path, next_agent="reviewer"), "now")
    assert made is not None and load(made)[handoff_tasks.DEPTH_KEY] == 1


def test_long_follow_up_ids_stay_valid_and_distinct() -> None:
    parent = "p" * 120
    first, second = handoff_tasks.followup_id(parent, "reviewer"), handoff_tasks.followup_id(parent + "x", "reviewer")
    assert len(first) <= 128 and SAFE_NAME.fullmatch(first) and first != second
    assert handoff_tasks.followup_id("short", "qa") == "short-followup-qa"


def test_a_failed_task_hands_nothing_off(tmp_path: Path) -> None:
    repo = hygiene_repo(tmp_path, daemon_extra=ROADMAP_OFF)
    config = repo.config()
    layout = BoardLayout(config.board_root)
    upkeep = Upkeep(config, layout, BoardIndex(layout), Telemetry(config.telemetry_db), time.time,
                    lambda: Snapshot([], [], []), Periodic(time.time))
    upkeep.finished(parent_task(tmp_path, next_agent="reviewer"), "error")
    upkeep.after_dispatch()
    assert board_files(repo, FOLLOWUP) == []
    upkeep.finished(parent_task(tmp_path, next_agent="reviewer"), "done")
    assert [p.name for p in board_files(repo, FOLLOWUP)] == [f"{FOLLOWUP}.yaml"]
