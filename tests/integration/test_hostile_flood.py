"""A flood of task files dropped at once into a running daemon: every one claimed, none twice, none stranded;
with file events on, and with them off (what an overflowed inotify queue leaves: the periodic rescan only).

Each task really runs (a worktree, /bin/true as the agent, the completion gate), so the thousand-file
floods take minutes on two cores: they are marked slow; a forty-file flood always runs."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from structlog.testing import capture_logs

from tests.integration.conftest import DAEMON_YAML, Repo
from tests.support.waiting import wait_for

FLOOD = 1000


def noop_setup(repo: Repo, rescan_s: float) -> None:
    """An agent that does nothing quickly (/bin/true), tasks that expect no change, eight at a time."""
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("max_parallel: 2", "max_parallel: 8")
                      .replace("rescan_interval_s: 30", f"rescan_interval_s: {rescan_s}"))
    repo.write_config("tools.yaml", 'tools:\n  noop:\n    binary: /bin/true\n    argv: ["{prompt}"]\n')
    repo.write_config("agents.yaml", "agents:\n  default:\n    tool: noop\n")


def drop_flood(repo: Repo, count: int) -> list[str]:
    staging = repo.path.parent / "flood-staging"
    staging.mkdir()
    ids = [f"flood-{index:04d}" for index in range(count)]
    for task_id in ids:   # written elsewhere first, so the drop itself is nothing but renames
        (staging / f"{task_id}.yaml").write_text(repo.task_text(task_id, expect_changes=False))
    for task_id in ids:
        os.rename(staging / f"{task_id}.yaml", repo.inbox / f"{task_id}.yaml")
    return ids


def run_flood(repo: Repo, *, watch: bool, count: int = FLOOD) -> None:
    noop_setup(repo, rescan_s=30 if watch else 0.5)   # with events, the rescan is far away: events do it
    with capture_logs() as logs, repo.serving(watch=watch):
        repo.wait_started()
        ids = drop_flood(repo, count)
        done_dir = repo.board / "done" / "backend-dev"
        wait_for(lambda: done_dir.is_dir() and len(os.listdir(done_dir)) >= count, timeout=1000,
                 what=f"{count} tasks to finish")
    claimed = Counter(entry["task_id"] for entry in logs if entry["event"] == "task.claimed")
    assert sorted(claimed) == ids and set(claimed.values()) == {1}            # all claimed, none twice
    names = Counter(p.name for p in repo.board.rglob("*.yaml") if not p.name.endswith(".error.yaml"))
    assert names == Counter(f"{task_id}.yaml" for task_id in ids)            # one file each, anywhere
    assert all(repo.done_path(task_id).exists() for task_id in ids)         # none stranded
    runs = Counter(row["task_id"] for row in repo.rows())
    assert runs == Counter(ids)                                             # each ran exactly once
    assert repo.worktrees() == [str(repo.path)]
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == []


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_flood_with_file_events(repo: Repo) -> None:
    run_flood(repo, watch=True)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_flood_with_file_events_lost(repo: Repo) -> None:
    run_flood(repo, watch=False)


def test_a_small_flood_without_file_events_is_found_by_the_rescan(repo: Repo) -> None:
    """The quick version that always runs: 40 files, no watcher at all."""
    run_flood(repo, watch=False, count=40)
