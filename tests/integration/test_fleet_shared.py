"""Real daemon processes sharing telemetry, budgets and provider pauses through one real PostgreSQL server:
three nodes whose slots together could spend past a hard budget never do, a 429 one node hits pauses the
tool on the others, `conveyor stats` on any node counts every node's runs, a SIGKILLed node's reservation
goes with its lease, and a database restart mid-run leaves one telemetry row per real run."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import psycopg
import pytest
import yaml

from conveyor.coordination.link import Link
from conveyor.coordination.shared_spend import SharedSpend
from tests.integration.conftest import ConveyorCli, Repo
from tests.integration.fleet_support import Fleet, pg_server, pg_url
from tests.integration.test_fleet import fleet
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

__all__ = ["fleet", "pg_server", "pg_url"]
pytestmark = pytest.mark.slow
DAY = 86400.0
AGENT = "json-agent"        # the fake agent speaking `claude -p --output-format json`: it reports its cost


def policies(fleet: Fleet, usd: float, estimate: float) -> None:
    """A hard global daily budget, pushed with the fleet's configuration (every clone reads it)."""
    fleet.repo.write_config("policies.yaml", yaml.safe_dump({
        "budgets": [{"scope": "global", "period": "daily", "usd": usd, "limit": "hard"}],
        "run_estimate_usd": estimate}))
    fleet.publish_config("a hard budget")


def ask(fleet: Fleet, tasks: dict[str, str], agent: str = "backend-dev") -> None:
    fleet.ask([fleet.document(task_id, text, agent=agent) for task_id, text in tasks.items()])


def stats(cli: ConveyorCli, fleet: Fleet, name: str, by: str) -> list[dict[str, Any]]:
    shown = cli("stats", "--format", "json", "--by", by, cwd=fleet.clone(name))
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)[by]
    assert isinstance(rows, list)
    return rows


def status(cli: ConveyorCli, fleet: Fleet, name: str) -> dict[str, Any]:
    shown = cli("status", "--format", "json", cwd=fleet.clone(name))
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert isinstance(document, dict)
    return document


def invocations(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT task_id, node, outcome, cost_usd, finished_at FROM conveyor_invocations"
                              " ORDER BY id")
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def reservations(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(str(r[0]), str(r[1])) for r in conn.execute("SELECT task_id, node FROM conveyor_spend_reservations")]


def real_runs(repo: Repo) -> Counter[str]:
    """Agent runs that really happened (the fake agent logs each start)."""
    return Counter(repo.agent.started())


def today() -> tuple[float, float]:
    now = time.time()
    return now - now % DAY, now - now % DAY + DAY


def test_three_nodes_never_spend_past_a_hard_budget_and_stats_on_each_show_all_of_it(
        fleet: Fleet, repo: Repo, pg_url: str, conveyor_cli: ConveyorCli) -> None:
    policies(fleet, usd=1.0, estimate=0.25)            # four runs of $0.25 fit; six slots could start six
    for name in ("a", "b", "c"):
        fleet.start(name)
    ids = [f"spend-{i}" for i in range(8)]
    # long runs: all eight are leased and dispatched while the first ones still run (spend settled: $0)
    ask(fleet, {t: f"FAKE sleep 8\nFAKE cost 0.25\nFAKE write out/{t}.txt x" for t in ids}, agent=AGENT)
    wait_for(lambda: len(fleet.done_ids() & set(ids)) >= 4, what="four tasks done", timeout=180)
    time.sleep(6)                                      # the others keep waiting: the day's budget is spent
    rows = invocations(pg_url)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(1.0)          # never past $1.00
    assert sorted(real_runs(repo).values()) == [1, 1, 1, 1] and len(rows) == 4
    assert len(fleet.done_ids() & set(ids)) == 4
    assert len({r["node"] for r in rows}) >= 2                             # spent on more than one node
    waits = [e for n in fleet.nodes for e in n.events("task.budget_wait")]   # a reservation refused, or the
    assert all("would pass $1.00" in e["reason"] for e in waits)            # dispatch saw the ledger full
    assert not reservations(pg_url)                                        # every run settled
    for name in ("a", "b", "c"):       # each node's stats count every node's runs (from the shared database)
        [tool] = stats(conveyor_cli, fleet, name, "tool")
        assert (tool["key"], tool["invocations"], tool["cost_usd"]) == ("fake-claude", 4, 1.0)
        assert not list((fleet.clone(name) / ".git").rglob("telemetry.db"))   # no private SQLite in a fleet
    assert len(status(conveyor_cli, fleet, "b")["fleet"]["nodes"]) == 3


def test_a_429_on_one_node_pauses_the_tool_on_every_node_until_its_reset(
        fleet: Fleet, repo: Repo, pg_url: str, conveyor_cli: ConveyorCli) -> None:
    for name in ("a", "b"):
        fleet.start(name)
    ask(fleet, {"limited": "FAKE api-error@1 429 20\nFAKE write out/limited.txt x"})
    hit = fleet.runner_of("limited")
    limited = hit.wait_event("tool.limited", lambda e: e.get("task_id") == "limited", timeout=60)
    other = next(n for n in fleet.nodes if n is not hit)
    other.wait_event("tool.paused_by_fleet", lambda e: e.get("tool") == "fake", timeout=30)
    ids = [f"after-{i}" for i in range(4)]             # both nodes have free slots for these
    ask(fleet, {t: f"FAKE write out/{t}.txt x" for t in ids})
    name = fleet.names[other.pid]
    paused = status(conveyor_cli, fleet, name)["paused_tools"]
    assert [p["tool"] for p in paused] == ["fake"]
    assert paused[0]["until"] == limited["until"]      # the reset the CLI named, the same on every node
    time.sleep(4)
    assert not any(real_runs(repo)[t] for t in ids), "a node ran the paused tool"
    wait_for(lambda: fleet.all_done([*ids, "limited"]), what="all done after the reset", timeout=120)
    assert real_runs(repo)["limited"] == 2


def test_a_sigkilled_nodes_reservation_goes_with_its_lease_and_its_run_is_closed_by_the_taker(
        fleet: Fleet, repo: Repo, pg_url: str) -> None:
    policies(fleet, usd=5.0, estimate=0.25)
    first = fleet.start("a")
    ask(fleet, {"victim": "FAKE sleep@1 20\nFAKE cost 0.25\nFAKE write out/victim.txt x"}, agent=AGENT)
    wait_for(lambda: real_runs(repo)["victim"] == 1, what="the agent to start", timeout=60)
    link = Link(pg_url, "test ledger")
    ledger = SharedSpend(link, "test")
    try:
        window = today()
        assert ledger.spend(*window) == pytest.approx(0.25)        # reserved while it runs
        first.kill_group()                                         # SIGKILL mid-run, nobody to take over yet
        wait_for(lambda: ledger.spend(*window) == 0, what="the reservation to go with the lease", timeout=30)
        assert [task for task, _node in reservations(pg_url)] == ["victim"]   # the row stays, counting no more
        fleet.start("b")
        wait_for(lambda: fleet.all_done(["victim"]), what="the new node to finish it", timeout=90)
        rows = [r for r in invocations(pg_url) if r["task_id"] == "victim"]
        assert [r["outcome"] for r in rows] == ["interrupted", "ok"]          # one closed row per real run
        assert all(r["finished_at"] is not None for r in rows) and real_runs(repo)["victim"] == 2
        wait_for(lambda: not reservations(pg_url), what="the run's reservation settled", timeout=10)
        assert ledger.spend(*window) == pytest.approx(0.25)                  # the real cost, once
    finally:
        link.close()


def test_a_database_restart_mid_run_counts_every_run_once(fleet: Fleet, repo: Repo, pg_url: str,
                                                          pg_server: PostgresServer,
                                                          conveyor_cli: ConveyorCli) -> None:
    policies(fleet, usd=50.0, estimate=0.5)
    for name in ("a", "b"):
        fleet.start(name)
    ids = [f"pg-{i}" for i in range(6)]
    ask(fleet, {t: f"FAKE sleep 2\nFAKE cost 0.1\nFAKE write out/{t}.txt x" for t in ids}, agent=AGENT)
    wait_for(lambda: sum(real_runs(repo).values()) >= 2, what="runs under way", timeout=60)
    pg_server.restart()
    try:
        wait_for(lambda: fleet.all_done(ids), what="all done", timeout=180)
    except AssertionError:
        raise AssertionError(fleet.logs()) from None
    time.sleep(1.0)
    rows = invocations(pg_url)
    assert not [r for r in rows if r["outcome"] == "running"]
    assert Counter(r["task_id"] for r in rows) == real_runs(repo)        # one row per real run, none twice
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(0.1 * sum(r["outcome"] == "ok" for r in rows))
    wait_for(lambda: not reservations(pg_url), what="every reservation settled", timeout=10)
    [agent] = stats(conveyor_cli, fleet, "a", "agent")
    assert agent["invocations"] == len(rows)
    assert all(n.alive() for n in fleet.nodes)


def test_a_database_away_longer_than_its_patience_puts_the_run_back_without_spending_an_attempt(
        fleet: Fleet, repo: Repo, pg_url: str, pg_server: PostgresServer) -> None:
    node = fleet.start("a")
    ask(fleet, {"outage": "FAKE sleep@1 2\nFAKE write out/outage.txt x"})
    wait_for(lambda: real_runs(repo)["outage"] == 1, what="the agent to start", timeout=60)
    pg_server.stop("immediate")               # the run ends while the database is away, for longer than
    try:                                      # the node waits to write its row (lease_timeout_s)
        node.wait_event("task.environment_error", lambda e: e.get("task_id") == "outage", timeout=60)
    finally:
        pg_server.start()
    try:
        wait_for(lambda: fleet.all_done(["outage"]), what="the task done once the database is back", timeout=120)
    except AssertionError:
        raise AssertionError(fleet.logs()) from None
    document = fleet.done_doc("outage")
    assert (document["status"], document["attempt"]) == ("done", 1)      # the outage was not its attempt
    rows = [r for r in invocations(pg_url) if r["task_id"] == "outage"]
    assert [r["outcome"] for r in rows] == ["interrupted", "ok"] and real_runs(repo)["outage"] == 2
