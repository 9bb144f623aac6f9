"""The PostgreSQL coordinator against a real server: exactly one node per task, leases that expire,
fences that refuse a late writer, leader election with failover, and a server restart survived."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from conveyor.coordination import schema
from conveyor.coordination.base import Asked
from conveyor.coordination.postgres import PostgresCoordinator
from conveyor.core.pg_schema import versioned
from conveyor.core.task import Task, parse_task
from tests.integration.conftest import DAEMON_YAML, ConveyorCli, Repo
from tests.integration.daemon_process import running_daemon
from tests.integration.fleet_support import pg_server, pg_url
from tests.support.postgres import PostgresServer, free_port
from tests.support.waiting import wait_for

__all__ = ["pg_server", "pg_url"]


NodeFactory = Callable[..., PostgresCoordinator]


@pytest.fixture
def node(pg_url: str) -> Iterator[NodeFactory]:
    """Coordinators on one database, as several daemons would hold them; closed after the test."""
    made: list[PostgresCoordinator] = []

    def make(name: str, lease: float = 30.0) -> PostgresCoordinator:
        coordinator = PostgresCoordinator(pg_url, lease_timeout_s=lease, poll_s=0.1,
                                          host_lock=contextlib.nullcontext(), node=name)
        coordinator.prepare()
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        coordinator.close()


def make_tasks(board: Path, count: int) -> list[Task]:
    folder = board / "assigned" / "backend-dev"
    folder.mkdir(parents=True)
    tasks = []
    for number in range(count):
        path = folder / f"t{number:03d}.yaml"
        path.write_text(f"id: t{number:03d}\nagent: backend-dev\nstatus: assigned\ntitle: T\n", encoding="utf-8")
        tasks.append(parse_task(path))
    return tasks


def row(url: str, task_id: str) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        cursor = conn.execute("SELECT state, owner, fence, grants FROM conveyor_tasks WHERE task_id = %s",
                              (task_id,))
        found = cursor.fetchone()
    assert found is not None
    return dict(zip(("state", "owner", "fence", "grants"), found, strict=True))


def test_exactly_one_node_gets_each_task_when_three_take_at_once(node: NodeFactory, pg_url: str,
                                                                 tmp_path: Path) -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    for task in make_tasks(tmp_path, 60):
        assert nodes[0].enqueue(task)
    taken: dict[str, list[str]] = {n.node: [] for n in nodes}
    start = threading.Barrier(3)

    def worker(coordinator: PostgresCoordinator) -> None:
        start.wait()
        while grants := coordinator.take(3):
            taken[coordinator.node].extend(g.task_id for g in grants)

    threads = [threading.Thread(target=worker, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    everything = [task_id for ids in taken.values() for task_id in ids]
    assert sorted(everything) == [f"t{i:03d}" for i in range(60)]      # all, each exactly once
    assert all(ids for ids in taken.values())                         # and shared out
    assert {row(pg_url, "t007")["fence"], row(pg_url, "t007")["grants"]} == {1}


def test_an_expired_lease_is_granted_again_and_the_late_writer_is_fenced(node: NodeFactory, pg_url: str,
                                                                         tmp_path: Path) -> None:
    first, second = node("first", lease=1.0), node("second", lease=1.0)
    (task,) = make_tasks(tmp_path, 1)
    first.enqueue(task)
    (grant,) = first.take(5)
    assert (grant.fence, grant.takeover) == (1, False)
    assert second.take(5) == []                      # leased: nobody else gets it
    time.sleep(1.3)                                  # `first` stops beating (died or froze)
    (again,) = second.take(5)
    assert (again.task_id, again.fence, again.takeover) == (task.id, 2, True)
    assert first.still_mine(task.id) is False        # the late writer asks before publishing: refused
    assert first.commit(task.id, "done") is False    # ... and before writing the finished file: refused
    assert row(pg_url, task.id) == {"state": "leased", "owner": "second", "fence": 2, "grants": 2}
    assert second.still_mine(task.id) is True
    assert second.commit(task.id, "done") is True
    assert row(pg_url, task.id)["state"] == "done"
    assert second.commit(task.id, "done") is False   # a result is recorded once
    assert first.take(5) == [] and second.take(5) == []


def test_a_node_whose_heartbeat_runs_keeps_its_lease(node: NodeFactory, pg_url: str, tmp_path: Path) -> None:
    keeper, other = node("keeper", lease=1.0), node("other", lease=1.0)
    (task,) = make_tasks(tmp_path, 1)
    keeper.enqueue(task)
    with keeper.hold():
        assert [g.task_id for g in keeper.take(1)] == [task.id]
        time.sleep(2.5)                                  # two and a half lease times, beating every third
        assert other.take(1) == []
        assert keeper.commit(task.id, "done")
    assert row(pg_url, task.id)["state"] == "done"


def test_leaving_gives_the_leases_back_at_once(node: NodeFactory, pg_url: str, tmp_path: Path) -> None:
    leaving, staying = node("leaving"), node("staying")
    tasks = make_tasks(tmp_path, 2)
    for task in tasks:
        leaving.enqueue(task)
    with leaving.hold():
        assert len(leaving.take(5)) == 2
    grants = staying.take(5)
    assert sorted(g.task_id for g in grants) == [t.id for t in tasks]
    assert not any(g.takeover for g in grants)           # handed back, not lost: no takeover
    assert [n.node for n in staying.nodes() if n.alive] == []


def test_one_leader_at_a_time_and_the_next_takes_over_when_it_goes(node: NodeFactory, pg_url: str) -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    assert [n.is_leader() for n in nodes] == [True, False, False]
    assert [n.is_leader() for n in nodes] == [True, False, False]    # held, not re-won
    nodes[0]._leader_link.close()                                    # its session ends (the process died)
    # the server frees the lock when the closed session's backend has gone, which is not the same instant:
    # ask until one of the others leads, then exactly one does
    wait_for(lambda: any(n.is_leader() for n in nodes[1:]), what="another node to take the lead")
    assert sorted(n.is_leader() for n in nodes[1:]) == [False, True]
    assert nodes[0].is_leader() is False                             # back, but the lock is taken


def test_a_frozen_leaders_session_times_out_and_leadership_moves(node: NodeFactory, pg_url: str) -> None:
    frozen, waiting = node("frozen", lease=1.0), node("waiting", lease=1.0)
    assert frozen.is_leader()
    time.sleep(2.0)                    # no heartbeat pings its session: the server ends it after 1 s idle
    assert waiting.is_leader()
    assert frozen.is_leader() is False


def asked(task_id: str) -> Asked:
    return Asked(task_id, f"assigned/backend-dev/{task_id}.yaml", "backend-dev", 0, f"id: {task_id}\n")


def test_an_outcome_lands_only_under_the_current_fence_and_is_applied_once(node: NodeFactory,
                                                                           tmp_path: Path) -> None:
    leader, first, second = node("leader", lease=1.0), node("first", lease=1.0), node("second", lease=1.0)
    leader.offer([asked("t1")])
    assert [g.document for g in first.take(1)] == ["id: t1\n"]     # the task travels with its document
    time.sleep(1.2)                                                 # first froze past its lease
    [grant] = second.take(1)
    assert (grant.takeover, grant.fence) == (True, 2)
    late, fresh = tmp_path / "late.yaml", tmp_path / "fresh.yaml"
    late.write_text("status: done\nby: first\n")
    fresh.write_text("status: done\nby: second\n")
    assert first.commit("t1", "done", late) is False               # the stale fence records nothing
    assert leader.unapplied() == []
    assert second.commit("t1", "done", fresh) is True
    [outcome] = leader.unapplied()
    assert (outcome.task_id, outcome.status, outcome.document) == ("t1", "done", "status: done\nby: second\n")
    leader.applied(["t1"])
    assert leader.unapplied() == []
    leader.offer([asked("t1")])                                     # offered again (a redone board pass): no-op
    assert second.take(1) == [] and leader.unapplied() == []


def test_a_finished_row_without_an_outcome_is_reopened_for_a_takeover(node: NodeFactory) -> None:
    leader, worker = node("leader", lease=1.0), node("worker", lease=1.0)
    leader.offer([asked("t0"), asked("t1")])
    grants = worker.take(1)
    assert worker.commit(grants[0].task_id, "done")     # no outcome (an older node died before its board move)
    time.sleep(1.2)
    leader.reconcile()
    taken = {g.task_id: g.takeover for g in worker.take(5)}
    assert taken == {grants[0].task_id: True, ({"t0", "t1"} - {grants[0].task_id}).pop(): False}


def test_each_new_leader_has_a_newer_epoch_and_the_old_one_is_fenced(node: NodeFactory) -> None:
    first, second = node("first", lease=2.0), node("second", lease=2.0)
    assert first.is_leader() and first.still_leading()
    epoch = first.epoch
    assert second.is_leader() is False
    first.close()                                       # its session ends: the advisory lock goes with it
    assert second.is_leader() and second.epoch == epoch + 1 and second.still_leading()
    assert first.still_leading() is False


def test_a_server_restart_is_ridden_out(node: NodeFactory, pg_server: PostgresServer, pg_url: str,
                                        tmp_path: Path) -> None:
    coordinator = node("n", lease=10.0)
    tasks = make_tasks(tmp_path, 2)
    for task in tasks:
        coordinator.enqueue(task)
    assert coordinator.is_leader()
    (grant,) = coordinator.take(1)
    pg_server.restart()
    assert coordinator.is_leader() is False or coordinator.is_leader()   # the old session is gone
    assert coordinator.is_leader()                                       # ... and the lock won again
    assert coordinator.commit(grant.task_id, "done")                     # reconnects; the fence still holds
    assert [g.task_id for g in coordinator.take(5)] == [tasks[1].id]


def test_a_commit_waits_for_a_server_that_is_coming_back(node: NodeFactory, pg_server: PostgresServer, pg_url: str,
                                                         tmp_path: Path) -> None:
    coordinator = node("n", lease=20.0)
    (task,) = make_tasks(tmp_path, 1)
    coordinator.enqueue(task)
    coordinator.take(1)
    pg_server.stop("immediate")
    restarter = threading.Timer(2.0, pg_server.start)
    restarter.start()
    try:
        assert coordinator.commit(task.id, "done")          # retried until the server answered again
    finally:
        restarter.join()
    assert row(pg_url, task.id)["state"] == "done"


def test_a_node_starting_while_the_fleet_works_takes_no_lock_on_its_tables(node: NodeFactory, pg_url: str,
                                                                           tmp_path: Path) -> None:
    """A start used to run every CREATE INDEX / ALTER TABLE again: each locks its table even when there is
    nothing to do, so a start waited for (and deadlocked with: measured, three nodes starting together) the
    nodes already claiming. Now the schema is applied once per version and a later start locks nothing."""
    from conveyor.coordination.shared import open_stores

    node("n1")
    open_stores(pg_url, tmp_path / "unused.db", "metadata", node="n1").close()   # every piece, once
    with psycopg.connect(pg_url) as busy:                             # a node in the middle of its work
        for table in ("conveyor_tasks", "conveyor_nodes", "conveyor_leader", "conveyor_invocations",
                      "conveyor_pull_requests", "conveyor_spend_reservations", "conveyor_tool_pauses"):
            busy.execute(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")   # what an UPDATE or INSERT holds
        with psycopg.connect(pg_url, autocommit=True) as probe:
            probe.execute("SET lock_timeout = '3s'")                  # waiting would raise LockNotAvailable
            probe.execute(versioned("coordination", schema.SCHEMA))
        node("n2")                          # joins: the schema is there (a wait would end in a statement timeout)
        open_stores(pg_url, tmp_path / "unused.db", "metadata", node="n2").close()
    with psycopg.connect(pg_url) as conn:
        parts = {row[0] for row in conn.execute("SELECT part FROM conveyor_schema")}
    assert parts == {"coordination", "telemetry", "spend", "pauses"}
    with psycopg.connect(pg_url, autocommit=True) as conn:           # a person drops a table by hand
        conn.execute("DROP TABLE conveyor_tool_pauses")
    open_stores(pg_url, tmp_path / "unused.db", "metadata", node="n3").close()   # the next start makes it again
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT to_regclass('conveyor_tool_pauses')").fetchone() == ("conveyor_tool_pauses",)


@pytest.mark.parametrize("url", ["postgresql://me:secret@db/conveyor", "postgresql://db/c?password=x"])
def test_a_password_in_daemon_yaml_is_refused(url: str) -> None:
    from pydantic import ValidationError

    from conveyor.config.models import DaemonSettings

    with pytest.raises(ValidationError, match="PGPASSWORD"):
        DaemonSettings(coordination=url)
    with pytest.raises(ValidationError, match="not a PostgreSQL URL"):
        DaemonSettings(coordination="mysql://db/conveyor")
    assert DaemonSettings(coordination="postgresql://db:5433/conveyor").coordination


def fleet_config(repo: Repo, tmp_path: Path, url: str) -> Path:
    folder = tmp_path / "config-fleet"
    shutil.copytree(repo.path / "config", folder)
    text = DAEMON_YAML.replace("{name: null, push: false}", "{name: origin, push: true}")   # a fleet needs one
    text += f"coordination: {url}\nlease_timeout_s: 1\nstate_dir: {tmp_path / 'state-fleet'}\n"
    (folder / "daemon.yaml").write_text(text, encoding="utf-8")
    return folder


def test_status_says_when_the_fleet_database_does_not_answer(repo: Repo, tmp_path: Path,
                                                             conveyor_cli: ConveyorCli) -> None:
    config = fleet_config(repo, tmp_path, f"postgresql://conveyor@127.0.0.1:{free_port()}/nowhere")
    shown = conveyor_cli("status", "--format", "json", "--config-dir", str(config), cwd=repo.path, timeout=30)
    assert shown.returncode == 0, shown.stderr
    fleet = json.loads(shown.stdout)["fleet"]
    assert fleet["nodes"] == [] and "database unreachable" in fleet["error"]
    table = conveyor_cli("status", "--config-dir", str(config), cwd=repo.path, timeout=30)
    assert table.returncode == 0 and "database unreachable" in table.stdout


def test_a_follower_sleeps_until_its_next_poll_not_until_the_leaders_jobs(node: NodeFactory, repo: Repo,
                                                                           tmp_path: Path, pg_url: str) -> None:
    """Only the leader runs the periodic jobs; a follower's loop used to end its sleep when one was due, and
    as it never runs them they stayed due: it woke every 10 ms (8 % of a core per idle node, measured). The
    follower now sleeps until its next poll of the database; the leader still wakes for a due job."""
    from conveyor.config import load_config
    from conveyor.daemon.loop import Daemon

    assert node("leader").is_leader()
    now = [1_000_000.0]
    config = load_config(repo.path, repo.path / ".git", fleet_config(repo, tmp_path, pg_url))
    follower = Daemon(config, env=dict(os.environ), clock=lambda: now[0])
    try:
        follower.periodic.every("rescan", 60, lambda: None)
        now[0] += 600                                                   # long overdue
        assert follower.fleet.lead() is False
        assert follower.periodic.next_in() == 0.0
        assert follower._sleep_time() == config.daemon.fleet_poll_s
    finally:
        follower.coordination.close()
        follower.shared.close()


def test_a_node_whose_database_does_not_answer_stops_with_a_clear_error(repo: Repo, tmp_path: Path,
                                                                        conveyor_cli: ConveyorCli) -> None:
    config = fleet_config(repo, tmp_path, f"postgresql://conveyor@127.0.0.1:{free_port()}/nowhere")
    started = conveyor_cli("run", "--config-dir", str(config), cwd=repo.path, timeout=60)
    assert started.returncode != 0
    assert "coordination database did not answer" in started.stderr


def test_a_node_shows_in_status_with_its_heartbeat(repo: Repo, tmp_path: Path, pg_url: str,
                                                   conveyor_cli: ConveyorCli) -> None:
    config = fleet_config(repo, tmp_path, pg_url)
    with running_daemon(repo.path, args=("--config-dir", str(config))) as daemon:
        daemon.wait_event("fleet.leader")
        shown = conveyor_cli("status", "--format", "json", "--config-dir", str(config), cwd=repo.path)
    (only,) = json.loads(shown.stdout)["fleet"]["nodes"]
    assert only["leader"] and only["alive"] and str(daemon.pid) in only["node"]


def test_a_takeover_publishes_what_the_dead_node_had_committed(node: NodeFactory, repo: Repo) -> None:
    """The dead node's agent ran and its commit is on the task branch: the next node publishes that commit
    under its own fence instead of running the agent again."""
    from conveyor.board.layout import BoardLayout
    from conveyor.pipeline import recovery
    from conveyor.pipeline.finish import Disposition
    from conveyor.telemetry.store import Telemetry

    config = repo.config()
    folder = repo.board / "assigned" / "backend-dev"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "committed.yaml"
    path.write_text(repo.task_text("committed", status="in_progress", attempt=1), encoding="utf-8")
    repo.git("checkout", "-q", "-b", "conveyor/committed")
    (repo.path / "work.txt").write_text("done by the node that died\n", encoding="utf-8")
    repo.git("add", "work.txt")
    repo.git("commit", "-q", "-m", "feat: the work\n\nConveyor-Task: committed")
    repo.git("checkout", "-q", "main")
    dead, heir = node("dead", lease=1.0), node("heir", lease=1.0)
    dead.enqueue(parse_task(path))
    dead.take(1)
    time.sleep(1.2)
    (grant,) = heir.take(1)
    assert grant.takeover
    report = recovery.take_over(parse_task(path), config, BoardLayout(config.board_root),
                                Telemetry(config.telemetry_db), time.time, {}, heir)
    assert report is not None and report.disposition is Disposition.DONE
    document = repo.done_doc("committed")
    assert document["status"] == "done" and document["result"]["commit"]
    assert dead.commit("committed", "done") is False          # and the dead node, were it back, is refused


def test_a_takeover_without_a_commit_runs_again_and_the_crash_costs_no_attempt(node: NodeFactory,
                                                                              repo: Repo) -> None:
    from conveyor.board.layout import BoardLayout
    from conveyor.pipeline import recovery
    from conveyor.telemetry.store import Telemetry

    config = repo.config()
    folder = repo.board / "assigned" / "backend-dev"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "rerun.yaml"
    path.write_text(repo.task_text("rerun", status="in_progress", attempt=1), encoding="utf-8")
    heir = node("heir")
    heir.enqueue(parse_task(path))
    heir.take(1)
    assert recovery.take_over(parse_task(path), config, BoardLayout(config.board_root),
                              Telemetry(config.telemetry_db), time.time, {}, heir) is None
    assert (parse_task(path).data["status"], parse_task(path).attempt) == ("assigned", 0)


def test_a_granted_task_whose_file_is_gone_or_broken_ends_as_an_error(node: NodeFactory, repo: Repo,
                                                                      pg_url: str) -> None:
    from conveyor.board.layout import BoardLayout
    from conveyor.daemon.fleet import FleetPump
    from conveyor.daemon.ready_queue import ReadyQueue
    from conveyor.scheduling.concurrency import ToolGate
    from conveyor.telemetry.store import Telemetry

    config = repo.config()
    folder = repo.board / "assigned" / "backend-dev"
    folder.mkdir(parents=True, exist_ok=True)
    gone, broken = folder / "gone.yaml", folder / "broken.yaml"
    for path in (gone, broken):
        path.write_text(repo.task_text(path.stem), encoding="utf-8")
    coordinator = node("n", lease=1.0)
    coordinator.enqueue(parse_task(gone))
    coordinator.offer([Asked("broken", "assigned/backend-dev/broken.yaml", "backend-dev", 0,
                             "id: broken\nagent: [not, a, name]\n")])    # the document itself is broken
    with psycopg.connect(pg_url) as conn:                       # a row without its document (an older node's)
        conn.execute("UPDATE conveyor_tasks SET document = NULL WHERE task_id = 'gone'")
    gone.unlink()                                               # ... whose file was deleted by hand
    ready = ReadyQueue(lambda: config, ToolGate(lambda: config.policies.tools, time.time), time.time,
                       lambda _path, _why: None)
    with ThreadPoolExecutor(1) as executor:
        pump = FleetPump(coordinator, lambda: config, BoardLayout(config.board_root), ready,
                         Telemetry(config.telemetry_db), time.time, {}, lambda _report: None, executor)
        assert pump.pull(5) == 0 and len(ready) == 0
    assert (row(pg_url, "gone")["state"], row(pg_url, "broken")["state"]) == ("error", "error")
    assert (repo.rejected / "broken.yaml.error.yaml").exists()
    outcomes = {o.task_id: o for o in coordinator.unapplied()}   # for the board leader's done/, with the reason
    assert {t: o.status for t, o in outcomes.items()} == {"gone": "error", "broken": "error"}
    assert "left assigned/" in outcomes["gone"].document and "agent" in outcomes["broken"].document
    time.sleep(1.2)
    coordinator.reconcile()                                     # an outcome is recorded: never granted again
    assert coordinator.take(5) == []
