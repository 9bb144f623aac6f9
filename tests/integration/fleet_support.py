"""Fixtures and helpers for the fleet: one real PostgreSQL server per test process, a fresh database per
test, and a fleet of real daemon processes, each in its own clone of one bare remote."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.conftest import DAEMON_YAML, Repo
from tests.integration.daemon_process import DaemonProcess
from tests.support.git_fleet import GitFleet
from tests.support.postgres import PostgresServer
from tests.support.waiting import wait_for

_numbers = itertools.count()
LEASE_S = 6   # generous: on a loaded 2-core machine a live node must not lose its lease


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer().init()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.create_database(f"fleet_{os.getpid()}_{next(_numbers)}")


def fleet_yaml(url: str, extra: str = "", base: str = DAEMON_YAML) -> str:
    text = base.replace("rescan_interval_s: 30", "rescan_interval_s: 2")
    text = text.replace("remote: {name: null, push: false}\n", "")
    if "remote:" not in text:
        text += "remote: {name: origin, push: true}\n"
    return text + (f"coordination: {url}\nlease_timeout_s: {LEASE_S}\nfleet_poll_s: 0.2\n"
                   "fleet: {board_branch: conveyor/board, sync_s: 0.3}\n" + extra)


class Fleet(GitFleet):
    """Nodes are real daemon processes, each in its own clone (its state folder inside that clone's .git)."""

    def __init__(self, repo: Repo, root: Path, url: str, stack: ExitStack, env: dict[str, str] | None = None,
                 daemon_yaml: str | None = None) -> None:
        super().__init__(repo.path, root)
        self.repo, self.url, self.stack, self.env = repo, url, stack, env or {}
        repo.write_config("daemon.yaml", daemon_yaml or fleet_yaml(url))
        self.publish_config()
        self.nodes: list[DaemonProcess] = []
        self.names: dict[int, str] = {}        # pid → the node's clone

    def start(self, name: str, env: dict[str, str] | None = None) -> DaemonProcess:
        node = DaemonProcess(self.clone(name), {**self.env, **(env or {})}).start()
        self.stack.callback(_stop, node)
        node.wait_event("daemon.ready", timeout=60)
        self.nodes.append(node)
        self.names[node.pid] = name
        return node

    def submit(self, task_id: str, description: str, **extra: Any) -> None:
        self.ask([self.document(task_id, description, **extra)])

    def document(self, task_id: str, description: str, **extra: Any) -> dict[str, Any]:
        return {"id": task_id, "agent": "backend-dev", "status": "new", "title": f"Title of {task_id}",
                "description": description, "artefacts": [], "priority": "normal", **extra}

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
        """Live nodes that won the leadership most recently (by epoch): the current leader."""
        alive = [(max(e["epoch"] for e in n.events("fleet.leader")), n) for n in self.nodes
                 if n.alive() and n.events("fleet.leader")]
        top = max((epoch for epoch, _n in alive), default=None)
        return [n for epoch, n in alive if epoch == top]

    def rows(self) -> dict[str, tuple[str, int, int]]:
        with psycopg.connect(self.url) as conn:
            return {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
                "SELECT task_id, state, fence, grants FROM conveyor_tasks")}

    def all_done(self, ids: list[str]) -> bool:
        return set(ids) <= self.done_ids()

    def logs(self) -> str:
        return "\n\n".join(f"--- {self.names.get(n.pid)} {n.pid}\n{n.tail(60)}" for n in self.nodes)


def _stop(node: DaemonProcess) -> None:
    if node.alive():
        try:
            node.stop(60)
        except Exception:
            node.kill_group()
