"""What the fleet shares besides the board, against a real PostgreSQL server: the spend ledger (concurrent
claimants never pass a hard budget together, a dead node's reservation goes with its lease, a reservation
settles to the real cost), provider pauses seen by every node, telemetry whose rollups match SQLite's, and
the dashboard and `conveyor stats` reading the fleet's runs."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conveyor.config import Config
from conveyor.config.models import Backoff
from conveyor.coordination import schema
from conveyor.coordination.link import Link
from conveyor.coordination.shared_pauses import SharedPauses
from conveyor.coordination.shared_spend import SharedSpend
from conveyor.coordination.spend import Cap
from conveyor.dashboard import readers
from conveyor.runner.types import Outcome, Tokens
from conveyor.scheduling.tool_health import ToolHealth
from conveyor.telemetry import stats
from conveyor.telemetry.pg_store import PgTelemetry
from conveyor.telemetry.records import InvocationEnd, InvocationStart
from conveyor.telemetry.store import Telemetry
from tests.integration.conftest import ConveyorCli, Repo
from tests.integration.fleet_support import fleet_yaml, pg_server, pg_url
from tests.support.postgres import PostgresServer, free_port

__all__ = ["pg_server", "pg_url"]
DAY = 86400.0


@pytest.fixture
def links(pg_url: str) -> Iterator[list[Link]]:
    """Connections as separate nodes hold them (each its own session); closed after the test."""
    made: list[Link] = []
    yield made
    for link in made:
        link.close()


def open_link(url: str, made: list[Link]) -> Link:
    link = Link(url, f"test {len(made)}")
    made.append(link)
    return link


def lease(url: str, task_id: str, node: str, seconds: float = 60.0) -> None:
    """The task's row as the coordinator leaves it when `node` holds its lease (negative: expired)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO conveyor_tasks (task_id, path, agent, state, owner, fence, lease_until)"
                     " VALUES (%s, %s, 'dev', 'leased', %s, 1, now() + make_interval(secs => %s))"
                     " ON CONFLICT (task_id) DO UPDATE SET owner = EXCLUDED.owner, state = 'leased',"
                     " lease_until = EXCLUDED.lease_until",
                     (task_id, f"assigned/dev/{task_id}.yaml", node, seconds))


def ledger(url: str, made: list[Link], node: str) -> SharedSpend:
    PgTelemetry(open_link(url, made), node=node)          # the invocations table the ledger reads
    spend = SharedSpend(open_link(url, made), node)
    spend.prepare()
    return spend


def daily(usd: float, now: float, agent: str | None = None) -> Cap:
    start = now - now % DAY
    return Cap("global daily budget", start, start + DAY, agent, None, usd)


def test_concurrent_claimants_on_three_nodes_never_reserve_past_a_hard_budget(pg_url: str,
                                                                              links: list[Link]) -> None:
    now = time.time()
    nodes = [ledger(pg_url, links, f"n{i}") for i in range(3)]
    ids = [f"t{i}" for i in range(12)]
    for number, task_id in enumerate(ids):
        lease(pg_url, task_id, f"n{number % 3}")
    # each claimant on its own connection, all released at once: the admissions race for real
    claimants = [SharedSpend(open_link(pg_url, links), f"n{i % 3}") for i in range(len(ids))]
    start, admitted, refused = threading.Barrier(len(ids)), [], []

    def claim(number: int) -> None:
        start.wait()
        answer = claimants[number].reserve(ids[number], agent="dev", tool="fake", usd=0.3,
                                           caps=[daily(1.0, now)], now=now)
        (admitted if answer is None else refused).append((ids[number], answer))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(len(ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) == 3 and len(refused) == 9            # 3 × $0.30 fit under $1.00; a 4th would not
    cap = daily(1.0, now)
    assert abs(nodes[0].spend(cap.since, cap.until) - 0.9) < 1e-9
    reason = refused[0][1]
    assert reason is not None and "would pass $1.00" in reason.reason
    assert reason.retry_at < now + 60                          # others' reservations settle: ask again soon


def test_a_dead_nodes_reservation_goes_with_its_lease_and_a_run_settles_to_its_real_cost(
        pg_url: str, links: list[Link]) -> None:
    now = time.time()
    a, b = ledger(pg_url, links, "a"), ledger(pg_url, links, "b")
    cap = [daily(1.0, now)]
    for task_id, node in (("a1", "a"), ("b1", "b"), ("b2", "b")):
        lease(pg_url, task_id, node)
    assert a.reserve("a1", agent="dev", tool="fake", usd=0.6, caps=cap, now=now) is None
    assert b.reserve("b1", agent="dev", tool="fake", usd=0.6, caps=cap, now=now) is not None   # 1.2 > 1.0
    lease(pg_url, "a1", "a", seconds=-1)           # node a died: its lease ran out (nobody extends it)
    assert b.reserve("b1", agent="dev", tool="fake", usd=0.6, caps=cap, now=now) is None
    # b1's run costs $0.25 for real: the reservation holds only the rest of its estimate
    telemetry = PgTelemetry(open_link(pg_url, links), node="b")
    row = telemetry.start(InvocationStart("b1", "dev", "fake", None, 1, now + 1))
    telemetry.finish(row, InvocationEnd(now + 2, 1.0, "ok", tokens=Tokens(10, 5), cost_usd=0.25))
    window = cap[0].since, cap[0].until
    assert abs(b.spend(*window) - 0.6) < 1e-9                   # 0.25 spent + 0.35 still reserved
    b.release("b1")
    assert abs(b.spend(*window) - 0.25) < 1e-9                  # settled: the real cost only
    # spent alone leaves no room for an estimate: wait for the window, not for others to settle
    over = b.reserve("b2", agent="dev", tool="fake", usd=0.8, caps=cap, now=now)
    assert over is not None and over.retry_at == cap[0].until
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT task_id FROM conveyor_spend_reservations ORDER BY 1").fetchall() == [("a1",)]


def test_a_429_on_one_node_pauses_the_tool_on_the_others_until_its_reset(pg_url: str, links: list[Link],
                                                                        tmp_path: Path) -> None:
    clock = time.time

    def node(name: str) -> ToolHealth:
        board = SharedPauses(open_link(pg_url, links), name)
        board.prepare()
        return ToolHealth(tmp_path / name / "pauses.json", Backoff, clock, shared=board, refresh_s=0.0)

    a, b, c = node("a"), node("b"), node("c")
    reset = clock() + 120
    assert b.paused_until("claude") is None
    pause = a.record_limit("claude", Outcome.RATE_LIMITED, reset, 429)
    assert b.paused_until("claude") == pause.until == reset
    assert [p.tool for p in c.active()] == ["claude"] and "HTTP 429" in c.active()[0].reason
    # an earlier reset from another node does not shorten the pause
    c.record_limit("claude", Outcome.RATE_LIMITED, clock() + 10, 429)
    assert a.paused_until("claude") == reset
    # a run that reached the provider ends the pause everywhere
    b.record_success("claude")
    assert a.paused_until("claude") is None and c.paused_until("claude") is None


def test_pauses_survive_a_database_that_does_not_answer(pg_server: PostgresServer, pg_url: str,
                                                        links: list[Link], tmp_path: Path) -> None:
    board = SharedPauses(open_link(pg_url, links), "a")
    board.prepare()
    health = ToolHealth(tmp_path / "pauses.json", Backoff, time.time, shared=board, refresh_s=0.0)
    pg_server.stop("immediate")
    try:
        pause = health.record_limit("codex", Outcome.RATE_LIMITED, time.time() + 60)   # not shared: kept here
        assert health.paused_until("codex") == pause.until
    finally:
        pg_server.start()
    other = ToolHealth(tmp_path / "other.json", Backoff, time.time, refresh_s=0.0,
                       shared=SharedPauses(open_link(pg_url, links), "b"))
    for _ in range(20):                        # the first call after the restart may meet the dead session
        if health.paused_until("codex") is not None and other.paused_until("codex") is not None:
            break
        time.sleep(0.25)
    assert other.paused_until("codex") == pause.until          # shared once the database answered again


def test_stats_over_postgresql_match_sqlite_row_for_row(pg_url: str, links: list[Link], tmp_path: Path) -> None:
    lite = Telemetry(tmp_path / "telemetry.db")
    shared = PgTelemetry(open_link(pg_url, links), node="n1")
    chance = random.Random(7)
    base = 1_764_547_200.0                     # 2025-12-01T00:00:00Z
    for number in range(300):
        started = base + chance.uniform(0, 40) * DAY
        start = InvocationStart(f"t{number % 90}", chance.choice(["dev", "ops"]), chance.choice(["claude", "codex"]),
                                chance.choice(["m1", "m2", None]), 1, started,
                                role=chance.choice(["author", "author", "fixer", "reviewer"]))
        duration = round(chance.expovariate(1 / 90), 3)
        end = InvocationEnd(started + duration, duration, chance.choice(["ok", "ok", "agent_error", "skipped"]),
                            tokens=Tokens(chance.randint(0, 9000), chance.randint(0, 900)),
                            cost_usd=round(chance.uniform(0, 0.5), 4))
        for store in (lite, shared):
            row = store.start(start)
            if number % 50:                    # a few stay running: they are not statistics
                store.finish(row, end)
    for store in (lite, shared):
        for number in range(0, 90, 7):
            store.record_outcome({"branch": f"conveyor/t{number}", "task_id": f"t{number}", "agent": "dev",
                                  "tool": "claude"}, "merged" if number % 2 else "closed", base + number * 3600)
    windows = [stats.Window(), stats.Window(base + 3.5 * DAY, base + 20.25 * DAY)]
    for window in windows:
        for group in stats.GROUPS:
            same_rows(shared.collect(group, window), lite.collect(group, window))
        for by in ("author", "reviewer"):
            assert shared.reviews(by, window.since, window.until) == lite.reviews(by, window.since, window.until)
    assert shared.totals("tool") == lite.totals("tool")
    assert shared.spend(base, base + 10 * DAY, agent="dev") == pytest.approx(lite.spend(base, base + 10 * DAY,
                                                                                         agent="dev"))
    lite.close()


def same_rows(found: list[dict[str, object]], wanted: list[dict[str, object]]) -> None:
    """Equal row for row, floats to a millionth (SQLite and PostgreSQL add in different orders)."""
    assert [row["key"] for row in found] == [row["key"] for row in wanted]
    for got, expected in zip(found, wanted, strict=True):
        assert set(got) == set(expected)
        for name, value in expected.items():
            assert got[name] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), name


def test_telemetry_writes_wait_out_a_server_restart_and_count_once(pg_server: PostgresServer, pg_url: str,
                                                                   links: list[Link]) -> None:
    telemetry = PgTelemetry(open_link(pg_url, links), node="n1", patience_s=30)
    row = telemetry.start(InvocationStart("r1", "dev", "fake", None, 1, time.time()))
    pg_server.restart()                        # every session cut, as a crash or a failover would
    telemetry.finish(row, InvocationEnd(time.time(), 1.0, "ok", cost_usd=0.5))
    second = telemetry.start(InvocationStart("r1", "dev", "fake", None, 2, time.time()))
    assert [r["outcome"] for r in telemetry.rows_for_task("r1")] == ["ok", "running"]
    assert telemetry.mark_interrupted(time.time()) == 1          # this node's own left-over run
    assert telemetry.rows_for_task("r1")[1]["id"] == second
    assert telemetry.spend(0) == 0.5
    with psycopg.connect(pg_url) as conn:   # another node's running row is not this node's to interrupt
        conn.execute("INSERT INTO conveyor_invocations (token, node, task_id, agent, tool, started_at)"
                     " VALUES ('x', 'n2', 'r2', 'dev', 'fake', 1)")
    assert telemetry.mark_interrupted(time.time()) == 0
    assert telemetry.mark_interrupted(time.time(), ["r2"]) == 1   # ... unless its task was taken over


def test_the_ledger_creates_what_it_reads_before_any_node_has_started(pg_url: str, links: list[Link]) -> None:
    spend = ledger(pg_url, links, "reader")
    assert spend.spend(0, None) == 0.0
    with psycopg.connect(pg_url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'conveyor_%'")}
    assert {"conveyor_tasks", "conveyor_invocations", "conveyor_spend_reservations"} <= tables
    assert schema.LEADER_LOCK != 0


def test_a_reservation_waits_while_the_database_is_away_and_unknown_spend_counts_as_spent(
        pg_server: PostgresServer, pg_url: str, links: list[Link]) -> None:
    now = time.time()
    spend = ledger(pg_url, links, "a")
    lease(pg_url, "t1", "a")
    pg_server.stop("immediate")
    try:
        refused = spend.reserve("t1", agent="dev", tool="fake", usd=0.1, caps=[daily(10.0, now)], now=now)
        assert refused is not None and "did not answer" in refused.reason and refused.retry_at <= now + 10
        assert spend.spend(now - 1, now + 1) == float("inf")     # a hard budget holds while it is unknown
    finally:
        pg_server.start()


def fleet_repo(repo: Repo, url: str) -> Config:
    repo.write_config("daemon.yaml", fleet_yaml(url))
    repo.write_config("policies.yaml", "budgets:\n  - {scope: global, period: daily, usd: 2, limit: hard}\n")
    return repo.config()


def test_the_dashboard_and_stats_read_the_fleets_telemetry(pg_url: str, links: list[Link], repo: Repo,
                                                           conveyor_cli: ConveyorCli) -> None:
    config = fleet_repo(repo, pg_url)
    now = time.time()
    for node, cost in (("n1", 0.25), ("n2", 0.5)):          # two nodes' runs of one task
        telemetry = PgTelemetry(open_link(pg_url, links), node=node)
        row = telemetry.start(InvocationStart("shown", "backend-dev", "fake", "m1", 1, now - 60))
        telemetry.finish(row, InvocationEnd(now - 30, 30.0, "ok", tokens=Tokens(100, 10), cost_usd=cost))
    elsewhere = ledger(pg_url, links, "n3")
    lease(pg_url, "running-elsewhere", "n3")
    assert elsewhere.reserve("running-elsewhere", agent="backend-dev", tool="fake", usd=1.0,
                                               caps=[daily(2.0, now)], now=now) is None
    repo.submit("shown", description="on the board")
    detail = readers.task_detail(config, "shown")
    assert detail is not None and [a["cost_usd"] for a in detail["attempts"]] == [0.25, 0.5]
    page = readers.spend(config, now)
    assert [(r["key"], r["invocations"], r["cost_usd"]) for r in page["groups"]["agent"]] == [("backend-dev", 2, 0.75)]
    assert page["budgets"][0]["spent"] == pytest.approx(1.75)   # spent, plus what a running task holds
    shown = conveyor_cli("stats", "--format", "json", "--by", "model", cwd=repo.path)
    assert shown.returncode == 0, shown.stderr
    assert [(r["key"], r["invocations"]) for r in json.loads(shown.stdout)["model"]] == [("m1", 2)]
    assert not config.telemetry_db.exists()                      # nothing went to a private SQLite file


def test_stats_says_so_when_the_fleets_database_is_away(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    fleet_repo(repo, f"postgresql://conveyor@127.0.0.1:{free_port()}/nowhere")
    shown = conveyor_cli("stats", "--format", "json", cwd=repo.path)
    assert shown.returncode != 0
    assert "coordination database" in shown.stderr and "did not answer" in shown.stderr
    assert "Traceback" not in shown.stderr
