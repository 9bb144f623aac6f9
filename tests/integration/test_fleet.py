"""Several real daemon processes serve one repository through one real PostgreSQL server: each task runs
on exactly one node, a node killed with SIGKILL mid-task loses its lease and another node finishes the
task (without spending an attempt), the board leader fails over, and a frozen node that wakes up after its
lease passed on writes nothing."""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

from tests.integration.conftest import DAEMON_YAML, ConveyorCli, Repo
from tests.integration.daemon_process import DaemonProcess
from tests.integration.fleet_support import pg_server, pg_url
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

__all__ = ["pg_server", "pg_url"]
pytestmark = pytest.mark.slow
LEASE_S = 6   # generous: on a loaded 2-core machine a live node must not lose its lease


class Fleet:
    def __init__(self, repo: Repo, root: Path, url: str, stack: ExitStack) -> None:
        self.repo, self.root, self.url, self.stack = repo, root, url, stack
        self.nodes: list[DaemonProcess] = []
        self.names: dict[int, str] = {}        # pid → the node's folders

    def config_dir(self, name: str) -> Path:
        """The repository's configuration, with this node's own state and worktrees folders."""
        folder = self.root / f"config-{name}"
        if not folder.exists():
            shutil.copytree(self.repo.path / "config", folder)
            text = DAEMON_YAML.replace("rescan_interval_s: 30", "rescan_interval_s: 2")
            text += (f"coordination: {self.url}\nlease_timeout_s: {LEASE_S}\nfleet_poll_s: 0.2\n"
                     f"state_dir: {self.root / ('state-' + name)}\nworktrees_dir: {self.root / ('wt-' + name)}\n")
            (folder / "daemon.yaml").write_text(text, encoding="utf-8")
        return folder

    def start(self, name: str) -> DaemonProcess:
        node = DaemonProcess(self.repo.path, args=("--config-dir", str(self.config_dir(name)))).start()
        self.stack.callback(_stop, node)
        node.wait_event("daemon.ready", timeout=60)
        self.nodes.append(node)
        self.names[node.pid] = name
        return node

    def started(self) -> Counter[str]:
        return Counter(e["task_id"] for node in self.nodes for e in node.events("task.started"))

    def runner_of(self, task_id: str) -> DaemonProcess:
        def find() -> DaemonProcess | None:
            return next((n for n in self.nodes if any(e.get("task_id") == task_id for e in n.events("task.started"))),
                        None)
        wait_for(lambda: find() is not None, what=f"{task_id} to start", timeout=60)
        found = find()
        assert found is not None
        return found

    def leaders(self) -> list[DaemonProcess]:
        return [n for n in self.nodes if n.alive() and n.events("fleet.leader")]

    def rows(self) -> dict[str, tuple[str, int, int]]:
        with psycopg.connect(self.url) as conn:
            return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
                "SELECT task_id, state, fence, grants FROM conveyor_tasks")}

    def commits_on_branch(self, task_id: str) -> int:
        return len(self.repo.git("rev-list", f"main..conveyor/{task_id}").split())


def _stop(node: DaemonProcess) -> None:
    if node.alive():
        try:
            node.stop(60)
        except Exception:
            node.kill_group()


@pytest.fixture
def fleet(repo: Repo, tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    with ExitStack() as stack:
        yield Fleet(repo, tmp_path, pg_url, stack)


def test_three_nodes_share_the_board_and_run_each_task_once(fleet: Fleet, repo: Repo,
                                                            conveyor_cli: ConveyorCli) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    ids = [f"share-{i}" for i in range(9)]
    for task_id in ids:
        repo.submit(task_id, description=f"FAKE sleep 2\nFAKE write out/{task_id}.txt done")
    wait_for(lambda: len(fleet.started()) >= 4, what="tasks running on the fleet", timeout=60)
    shown = conveyor_cli("status", "--format", "json", "--config-dir", str(fleet.config_dir("a")), cwd=repo.path)
    nodes = json.loads(shown.stdout)["fleet"]["nodes"]
    assert len(nodes) == 3 and all(n["alive"] and n["heartbeat_age_s"] < LEASE_S for n in nodes)
    assert sum(n["leader"] for n in nodes) == 1
    assert {t for n in nodes for t in n["tasks"]} <= set(ids) and any(n["tasks"] for n in nodes)
    table = conveyor_cli("status", "--config-dir", str(fleet.config_dir("b")), cwd=repo.path).stdout
    assert "Fleet" in table and "leader" in table
    wait_for(lambda: all(repo.done_path(t).exists() for t in ids), what="all tasks done", timeout=90)
    assert fleet.started() == Counter({t: 1 for t in ids})                  # exactly once each
    assert sum(1 for n in fleet.nodes if n.events("task.started")) >= 2      # on more than one node
    assert len(fleet.leaders()) == 1                                        # one board leader
    assert {task_id: state for task_id, (state, _f, _g) in fleet.rows().items()} == {t: "done" for t in ids}
    assert all(repo.done_doc(t)["status"] == "done" for t in ids)
    assert all(fleet.commits_on_branch(t) == 1 for t in ids)
    assert not list((repo.board / "assigned").rglob("*.yaml"))


def test_a_node_killed_mid_task_loses_it_to_another_and_the_leader_fails_over(fleet: Fleet, repo: Repo) -> None:
    for name in ("a", "b", "c"):
        fleet.start(name)
    repo.submit("victim", description="FAKE sleep 3\nFAKE write out/victim.txt done")
    runner = fleet.runner_of("victim")
    runner.kill_group()                                    # SIGKILL mid-run: no goodbye, the lease just stops
    wait_for(lambda: repo.done_path("victim").exists(), what="another node to finish it", timeout=60)
    finisher = next(n for n in fleet.nodes if n is not runner and n.events("task.started"))
    assert [e["takeover"] for e in finisher.events("fleet.granted") if e["task_id"] == "victim"] == [True]
    assert fleet.started()["victim"] == 2                  # the killed run, and the one that finished
    assert fleet.rows()["victim"] == ("done", 2, 2)        # granted twice, fence 2 wrote the result
    document = repo.done_doc("victim")
    assert (document["status"], document["attempt"]) == ("done", 1)   # the crash was not the task's attempt
    assert fleet.commits_on_branch("victim") == 1
    # now the board leader dies too (it may have been the runner): another node leads and takes new work
    for leader in fleet.leaders():
        leader.kill_group()
    survivors = [n for n in fleet.nodes if n.alive()]
    wait_for(lambda: any(n.events("fleet.leader") for n in survivors), what="a new leader", timeout=30)
    repo.submit("after", description="FAKE write out/after.txt done")
    wait_for(lambda: repo.done_path("after").exists(), what="the new leader's intake", timeout=60)
    assert fleet.started()["after"] == 1


def test_a_frozen_node_that_wakes_after_its_lease_passed_on_writes_nothing(fleet: Fleet, repo: Repo) -> None:
    for name in ("a", "b"):
        fleet.start(name)
    repo.submit("frozen", description="FAKE sleep 2\nFAKE write out/frozen.txt done")
    sleeper = fleet.runner_of("frozen")
    wait_for(lambda: (repo.out / "frozen.prompt").exists(), what="its agent to start")   # mid-run, not mid-git
    sleeper.signal(signal.SIGSTOP)                         # a long GC pause, a VM suspended, a stalled disk
    try:
        other = next(n for n in fleet.nodes if n is not sleeper)
        try:
            wait_for(lambda: repo.done_path("frozen").exists(), what="the other node to finish it", timeout=60)
        except AssertionError:
            raise AssertionError(other.tail(40)) from None
        finished = repo.done_path("frozen").read_bytes()
        branch_head = repo.git("rev-parse", "conveyor/frozen").strip()
    finally:
        sleeper.signal(signal.SIGCONT)
    refused = sleeper.wait_event("fleet.fenced", lambda e: e.get("task_id") == "frozen", timeout=30)
    assert refused["node"]
    time.sleep(1.0)                                        # give a wrong write the time to happen
    assert repo.done_path("frozen").read_bytes() == finished
    assert repo.git("rev-parse", "conveyor/frozen").strip() == branch_head
    assert repo.done_doc("frozen")["status"] == "done", repo.done_doc("frozen")["error"]
    assert fleet.commits_on_branch("frozen") == 1
    assert not list((repo.board / "assigned").rglob("*.yaml"))
    assert fleet.rows()["frozen"] == ("done", 2, 2)
    assert sleeper.alive()                                 # and it keeps serving


def test_chaos_kills_and_a_database_restart_leave_every_task_done_exactly_once(
        fleet: Fleet, repo: Repo, pg_server: PostgresServer) -> None:
    """30 tasks, three nodes, five SIGKILLs of random nodes (the board leader among them, each killed node
    started again as a new node) and one PostgreSQL restart, all while tasks run."""
    for name in ("a", "b", "c"):
        fleet.start(name)
    ids = [f"chaos-{i:02d}" for i in range(30)]
    for task_id in ids:
        repo.submit(task_id, description=f"FAKE sleep 1\nFAKE write out/{task_id}.txt done")
    chance = random.Random(12)
    kills = []
    for round_no in range(6):
        time.sleep(2.5)
        if round_no == 3:
            pg_server.restart()
            continue
        alive = [n for n in fleet.nodes if n.alive()]
        leaders = [n for n in alive if n.events("fleet.leader")] if round_no == 1 else []
        victim = leaders[-1] if leaders else chance.choice(alive)
        kills.append(victim.pid)
        victim.kill_group()
        fleet.start(fleet.names[victim.pid])                    # a new node on the same machine and folders
    assert len(kills) == 5
    wait_for(lambda: all(repo.done_path(t).exists() for t in ids), what="all 30 tasks done", timeout=150)
    time.sleep(1.0)            # the last node's log line comes just after its file move
    finished = Counter(e["task_id"] for n in fleet.nodes for e in n.events("task.finished"))
    # each finished once (a node killed between its board move and its log line says nothing of it)
    assert max(finished.values()) == 1 and set(finished) <= set(ids), finished
    assert len(finished) >= len(ids) - len(kills)
    assert {t: repo.done_doc(t)["status"] for t in ids} == {t: "done" for t in ids}
    assert sorted(p.stem for p in (repo.board / "done").rglob("chaos-*.yaml")) == ids
    assert not list((repo.board / "assigned").rglob("*.yaml"))
    assert {t: fleet.commits_on_branch(t) for t in ids} == {t: 1 for t in ids}   # one commit per branch
    assert {state for state, _f, _g in fleet.rows().values()} == {"done"}
