"""The fleet's board leader against a real bare remote and a real PostgreSQL server: what was asked on the
base branch becomes board moves on the board branch, a push rejected because the remote moved is redone on
the new tip (nothing lost, nothing doubled), and a leader whose epoch is no longer the newest writes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from conveyor.board.remote_board import RemoteBoard
from conveyor.config import load_config
from conveyor.coordination.postgres import PostgresCoordinator
from conveyor.core.errors import GitError
from conveyor.daemon.board_keeper import BoardKeeper
from tests.integration.conftest import Repo
from tests.integration.fleet_support import fleet_yaml, pg_server, pg_url
from tests.support.git_fleet import BOARD, GitFleet, git

__all__ = ["pg_server", "pg_url"]


@pytest.fixture
def leader(pg_url: str) -> Iterator[PostgresCoordinator]:
    coordinator = PostgresCoordinator(pg_url, lease_timeout_s=30, poll_s=0.1, host_lock=contextlib.nullcontext(),
                                      node="leader")
    coordinator.prepare()
    assert coordinator.is_leader()
    yield coordinator
    coordinator.close()


@pytest.fixture
def fleet(repo: Repo, tmp_path: Path, pg_url: str) -> GitFleet:
    fleet = GitFleet(repo.path, tmp_path)
    repo.write_config("daemon.yaml", fleet_yaml(pg_url))
    fleet.publish_config()
    return fleet


def task(task_id: str) -> dict[str, Any]:
    return {"id": task_id, "agent": "backend-dev", "status": "new", "title": f"T {task_id}", "description": "d"}


def keeper_in(fleet: GitFleet, ledger: PostgresCoordinator, name: str) -> BoardKeeper:
    """The board keeper of a node whose clone is `name` (its configuration is the committed one)."""
    node = fleet.clone(name)
    config = load_config(node, node / ".git")
    return BoardKeeper(lambda: config, ledger, lambda: 0.0)


def test_a_push_rejected_because_the_remote_moved_is_redone_on_the_new_tip(
        fleet: GitFleet, repo: Repo, leader: PostgresCoordinator, monkeypatch: pytest.MonkeyPatch) -> None:
    keeper = keeper_in(fleet, leader, "a")
    fleet.ask([task("first")])
    keeper.run()
    assert "assigned/backend-dev/first.yaml" in fleet.board_files()
    # a person (or an older leader) pushes to the board branch right after this leader fetched it
    person = fleet.clone("person")
    real_fetch = RemoteBoard.fetch
    moved: list[str] = []

    def fetch_then_remote_moves(self: RemoteBoard) -> None:
        real_fetch(self)
        if not moved:
            git(person, "fetch", "-q", "origin")
            git(person, "checkout", "-q", "-B", "board", "origin/conveyor/board")
            (person / BOARD / "NOTE.md").write_text("a person's note on the board branch\n")
            git(person, "add", "-A")
            git(person, "commit", "-q", "-m", "note")
            git(person, "push", "-q", "origin", "board:conveyor/board")
            moved.append(git(person, "rev-parse", "HEAD"))

    monkeypatch.setattr(RemoteBoard, "fetch", fetch_then_remote_moves)
    fleet.ask([task("second")])
    with structlog.testing.capture_logs() as logs:
        keeper.run()
    events = [e["event"] for e in logs]
    assert events.count("fleet.board_push_rejected") == 1 and events[-1] == "fleet.board_pushed", events
    files = fleet.board_files()
    assert {"NOTE.md", "assigned/backend-dev/first.yaml", "assigned/backend-dev/second.yaml"} <= set(files)
    assert git(fleet.remote, "rev-parse", "conveyor/board~1") == moved[0]   # redone on top of the person's commit
    assert set(leader.known(["first", "second"])) == {"first", "second"}
    assert yaml.safe_load(git(fleet.remote, "show", f"conveyor/board:{BOARD}/assigned/backend-dev/second.yaml"))[
        "id"] == "second"


def test_a_leader_whose_epoch_is_not_the_newest_writes_nothing(
        fleet: GitFleet, repo: Repo, leader: PostgresCoordinator, pg_url: str) -> None:
    old = keeper_in(fleet, leader, "a")
    fleet.ask([task("one")])
    old.run()
    leader.close()                                               # its session ends: the lock passes on
    heir = PostgresCoordinator(pg_url, lease_timeout_s=30, poll_s=0.1, host_lock=contextlib.nullcontext(),
                               node="heir")
    try:
        assert heir.is_leader() and heir.epoch == leader.epoch + 1
        fleet.ask([task("two")])
        keeper_in(fleet, heir, "b").run()
        head = fleet.board_head()
        assert "assigned/backend-dev/two.yaml" in fleet.board_files()
        fleet.ask([task("three")])
        with structlog.testing.capture_logs() as logs:
            old.run()                                            # the old leader wakes up and tries a pass
        assert [e["event"] for e in logs] == ["fleet.board_stale"]
        assert fleet.board_head() == head                        # nothing pushed
        assert "assigned/backend-dev/three.yaml" not in fleet.board_files()
    finally:
        heir.close()


def test_the_board_branch_can_never_be_the_base_branch(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="never pushes"):
        RemoteBoard(tmp_path, "origin", "main", "main", tmp_path / "index")
