"""Chaos on the fleet (issue 12, "Done means"): 30 tasks, three daemon processes each in its own clone and
state folder, one bare remote, a real PostgreSQL server and the fake GitHub. Five SIGKILLs of random nodes
(the board leader among them; each killed node starts again in its clone) and one PostgreSQL restart, all
while tasks run. Afterwards the board branch shows every task done exactly once, each task branch holds one
commit, no pull request is doubled, and the fleet's telemetry (one PostgreSQL table for every node) has
one committed run per task, a row for every run the agent made, every other row an interrupted (or
uncommitted) attempt, and none left running."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import Repo
from tests.integration.fleet_support import Fleet, fleet_yaml, pg_server, pg_url
from tests.integration.test_chaos import GH_REPO, TOKEN, TOKEN_ENV, chaos_daemon_yaml, seed
from tests.support.fake_github import FakeGitHub
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

__all__ = ["pg_server", "pg_url"]
TASKS = 30
KILLS = 5


@pytest.fixture
def github(tmp_path: Path) -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repos=(GH_REPO,), remotes={GH_REPO: tmp_path / "remote.git"}) as server:
        yield server


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_fleet_chaos_kills_and_a_database_restart_leave_every_task_done_exactly_once(
        repo: Repo, tmp_path: Path, pg_url: str, pg_server: PostgresServer, github: FakeGitHub) -> None:
    rng = random.Random(seed())
    yaml_text = fleet_yaml(pg_url, base=chaos_daemon_yaml(github.api_url))
    with ExitStack() as stack:
        fleet = Fleet(repo, tmp_path, pg_url, stack, env={TOKEN_ENV: TOKEN}, daemon_yaml=yaml_text)
        for name in ("a", "b", "c"):
            fleet.start(name)
        ids = [f"chaos-{i:02d}" for i in range(TASKS)]
        fleet.ask([fleet.document(t, f"FAKE sleep {round(rng.uniform(0.3, 1.5), 2)}\n"
                                     f"FAKE write chaos/{t}.txt {t}") for t in ids])
        kills: list[int] = []
        for round_no in range(KILLS + 1):
            time.sleep(rng.uniform(2.0, 3.5))
            if round_no == 2:
                pg_server.restart()                       # every session cut, as a crash or failover would
                continue
            alive = [n for n in fleet.nodes if n.alive()]
            leaders = fleet.leaders() if round_no in (0, 4) else []
            victim = leaders[0] if leaders else rng.choice(alive)
            kills.append(victim.pid)
            victim.kill_group()
            fleet.start(fleet.names[victim.pid])          # a new node in the same clone and state folder
        assert len(kills) == KILLS
        try:
            wait_for(lambda: fleet.all_done(ids), what="all 30 tasks done on the board branch", timeout=240)
        except AssertionError:
            raise AssertionError(fleet.logs()) from None
        time.sleep(1.0)
        check_board(fleet, ids)
        commits = check_branches(fleet, ids)
        check_pull_requests(fleet, ids, github, commits)
        check_telemetry(fleet, ids, commits)
        assert {state for state, _f, _g in fleet.rows().values()} == {"done"}
        assert any(n.events("fleet.takeover") or n.events("fleet.resume_from_commit") for n in fleet.nodes)
        for name in ("a", "b", "c"):                          # no node keeps a copy of a task it does not run
            assert not list((fleet.clone(name) / "work" / "collaboration" / "assigned").rglob("*.yaml")), name


def check_board(fleet: Fleet, ids: list[str]) -> None:
    files = fleet.board_files()
    done = Counter(Path(p).stem for p in files if p.startswith("done/") and p.endswith(".yaml"))
    assert done == Counter({t: 1 for t in ids})                                  # each done exactly once
    assert not [p for p in files if p.startswith(("assigned/backend-dev/", "inbox/chaos-", "_rejected/"))]
    for task_id in ids:
        document = fleet.done_doc(task_id)
        assert document["status"] == "done", document
    finished = Counter(e["task_id"] for n in fleet.nodes for e in n.events("task.finished"))
    assert max(finished.values()) == 1, finished                                 # no node finished one twice


def check_branches(fleet: Fleet, ids: list[str]) -> dict[str, str]:
    commits = {}
    for task_id in ids:
        assert fleet.branch_commits(task_id) == 1, task_id                       # one commit per task branch
        commits[task_id] = fleet.branch_head(task_id)
        assert fleet.done_doc(task_id)["result"]["commit"] == commits[task_id]
    return commits


def check_pull_requests(fleet: Fleet, ids: list[str], github: FakeGitHub, commits: dict[str, str]) -> None:
    heads = Counter(pull.head for pull in github.pulls(GH_REPO))
    assert {head: n for head, n in heads.items() if n > 1} == {}                 # never a duplicate pull request
    for task_id in ids:
        pulls = github.pulls_for(GH_REPO, f"conveyor/{task_id}")
        assert len(pulls) == 1, task_id
        assert fleet.done_doc(task_id)["result"]["pr_url"].endswith(f"/pull/{pulls[0].number}")


def check_telemetry(fleet: Fleet, ids: list[str], commits: dict[str, str]) -> None:
    with psycopg.connect(fleet.url) as conn:   # the fleet's telemetry: every node's runs in one table
        cursor = conn.execute("SELECT * FROM conveyor_invocations ORDER BY id")
        names = [column.name for column in cursor.description or []]
        rows: list[dict[str, Any]] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    # a killed node's runs were closed by the node that took its task over
    assert [r for r in rows if r["outcome"] == "running"] == []
    runs = Counter(fleet.repo.agent.started())   # the agent's own count of its runs
    assert all(len([r for r in rows if r["task_id"] == t]) >= runs[t] for t in ids), (runs, rows)
    resumed = {e["task_id"] for n in fleet.nodes for e in n.events("fleet.resume_from_commit")}
    for task_id in ids:
        mine = [r for r in rows if r["task_id"] == task_id]
        committed = [r for r in mine if r["commit_sha"]]
        assert len(committed) <= 1, mine                           # no commit was made twice
        if committed:                                              # the run that made the task's commit
            assert (committed[0]["outcome"], committed[0]["commit_sha"]) == ("ok", commits[task_id])
        else:
            # its node died after pushing the commit and before noting it; another node published that
            # commit from the branch (the row that made it stays `ok`, without the commit noted)
            assert task_id in resumed and any(r["outcome"] == "ok" for r in mine), mine
        assert {r["outcome"] for r in mine} <= {"interrupted", "ok"}, mine
    print(f"telemetry: {len(rows)} rows for {len(ids)} tasks, "
          f"{sum(r['outcome'] == 'interrupted' for r in rows)} interrupted")
