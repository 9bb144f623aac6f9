"""The fleet's figures for scripts/bench.py (issue 12): throughput of 1, 2 and 3 daemon processes, each in
its own clone of one bare remote, through one PostgreSQL server with a sleeping no-op agent (1 s per task,
max_parallel 4 each): from the push of the tasks to the base branch's inbox/ until the board branch shows
them all in done/. And the latency of a claim (`take`) through PostgreSQL while three nodes take at once,
and of a budget reservation (admit and settle, `coordination.shared_spend`) while three nodes reserve at once.

Needs the PostgreSQL server binaries (`apt-get install postgresql`); the server is a throwaway cluster.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from conveyor.coordination.base import Asked
from conveyor.coordination.postgres import PostgresCoordinator
from conveyor.setup.init_repo import init_repository

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the throwaway server (tests/support/) comes from the source tree, not the wheel
from tests.support.postgres import PostgresServer  # noqa: E402

SLEEPING_AGENT = """#!/bin/sh
sleep 1
printf 'touched by %s\\n' "$1" >> touched.txt
"""


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _repo(root: Path) -> Path:
    repo = root / f"fleet-repo-{random.randrange(1 << 30):x}"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    init_repository(repo)
    agent = root / "sleeping-agent.sh"
    agent.write_text(SLEEPING_AGENT)
    agent.chmod(0o755)
    tool = {"binary": str(agent), "argv": ["{task_id}"], "parser": "text", "prompt_via": "stdin",
            "env_allowlist": ["PATH", "HOME", "LANG"]}
    (repo / "config" / "tools.yaml").write_text(yaml.safe_dump({"tools": {"sleeper": tool}}))
    (repo / "config" / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": {"tool": "sleeper"}}}))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "bench fixture")
    return repo


def _fleet_config(repo: Path, remote: Path, url: str) -> None:
    """The fleet's daemon.yaml, committed and pushed: every node's clone reads the same."""
    (repo / "config" / "daemon.yaml").write_text(yaml.safe_dump({
        "max_parallel": 4, "rescan_interval_s": 5, "attempts": 1, "remote": {"name": "origin", "push": True},
        "pull_requests": {"enabled": False}, "roadmap": {"enabled": False}, "coordination": url,
        "lease_timeout_s": 30, "fleet_poll_s": 0.2, "fleet": {"board_branch": "conveyor/board", "sync_s": 0.5}}))
    _git(repo, "commit", "-q", "-am", "fleet configuration")
    _git(remote.parent, "init", "-q", "--bare", "-b", "main", str(remote))
    _git(repo, "remote", "add", "origin", str(remote))
    _git(repo, "push", "-q", "origin", "main")


def _alive_nodes(url: str) -> int:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM conveyor_nodes WHERE stopped_at IS NULL").fetchone()
        return int(row[0]) if row else 0
    return 0


def _done(remote: Path) -> int:
    """Tasks the board branch shows in done/."""
    try:
        out = _git(remote, "ls-tree", "-r", "--name-only", "conveyor/board", "--", "work/collaboration/done/")
    except subprocess.CalledProcessError:
        return 0
    return sum(1 for line in out.splitlines() if line.endswith(".yaml"))


def _board_tip(remote: Path) -> str | None:
    """The board branch's tip in the bare remote, read from its ref file (git writes a pushed ref loose)."""
    try:
        return (remote / "refs" / "heads" / "conveyor" / "board").read_text().strip()
    except OSError:
        return None


def fleet_round(root: Path, server: PostgresServer, nodes: int, tasks: int) -> dict[str, Any]:
    repo = _repo(root)
    url = server.create_database(f"bench_{nodes}_{random.randrange(1 << 30):x}")
    procs = []
    home = root / f"{repo.name}-nodes"     # the nodes' own clones, and the remote they share
    home.mkdir()
    remote = home / "remote.git"
    _fleet_config(repo, remote, url)
    try:
        for number in range(nodes):
            clone = home / f"n{number}"
            _git(home, "clone", "-q", str(remote), str(clone))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "conveyor", "run", "--repo", str(clone), "--json-logs", "--log-level",
                 os.environ.get("CONVEYOR_BENCH_LOG_LEVEL", "warning")],
                cwd=clone, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=(home / f"n{number}.log").open("wb"), start_new_session=True))
        deadline = time.monotonic() + 120
        while _alive_nodes(url) < nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a node did not start: " + "\n".join(
                    (home / f"n{n}.log").read_text(errors="replace")[-2000:] for n in range(nodes)))
            time.sleep(0.1)
        inbox = repo / "work" / "collaboration" / "inbox"
        for number in range(tasks):
            (inbox / f"f{number:04d}.yaml").write_text(yaml.safe_dump({
                "id": f"f{number:04d}", "agent": "bench", "status": "new", "title": "Sleep one second",
                "artefacts": ["touched.txt"]}))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"ask {tasks} tasks")
        started = time.monotonic()
        _git(repo, "push", "-q", "origin", "main")
        deadline = started + 600
        seen, finished = None, 0
        while finished < tasks and time.monotonic() < deadline:
            tip = _board_tip(remote)        # a file read: the harness spends no CPU the nodes would have used
            if tip is None or tip != seen:  # (no loose ref: packed, or not pushed yet; ask git)
                seen, finished = tip, _done(remote)
            if finished < tasks:
                time.sleep(0.05 if tip is not None else 0.1)
        elapsed = time.monotonic() - started
        finished = _done(remote)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
    return {"nodes": nodes, "tasks": tasks, "finished": finished, "elapsed_s": round(elapsed, 2),
            "tasks_per_s": round(finished / elapsed, 3)}


def claim_latency(root: Path, server: PostgresServer, rows: int) -> dict[str, Any]:
    """p50/p95 of one `take(1)` while three coordinators take at once from `rows` queued tasks."""
    url = server.create_database(f"bench_claims_{random.randrange(1 << 30):x}")
    takers = [PostgresCoordinator(url, lease_timeout_s=30, poll_s=1, host_lock=contextlib.nullcontext(),
                                  node=f"bench-{n}") for n in range(3)]
    takers[0].prepare()
    takers[0].offer([Asked(f"c{n:05d}", f"assigned/bench/c{n:05d}.yaml", "bench", 0,
                           f"id: c{n:05d}\nagent: bench\nstatus: new\ntitle: T\n") for n in range(rows)])
    latencies: list[float] = []
    lock = threading.Lock()

    def take(coordinator: PostgresCoordinator) -> None:
        while True:
            began = time.perf_counter()
            grants = coordinator.take(1)
            spent = time.perf_counter() - began
            if not grants:
                return
            with lock:
                latencies.append(spent)

    threads = [threading.Thread(target=take, args=(c,)) for c in takers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for coordinator in takers:
        coordinator.close()
    latencies.sort()
    return {"claims": len(latencies), "takers": 3,
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            "p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2)}


def reserve_latency(server: PostgresServer, tasks: int) -> dict[str, Any]:
    """p50/p95 of one budget reservation (the transaction a task start waits for) and of its release, while
    three nodes reserve at once against one hard daily budget, each for tasks it holds the lease of."""
    from conveyor.coordination.link import Link
    from conveyor.coordination.shared_spend import SharedSpend
    from conveyor.coordination.spend import Cap
    from conveyor.telemetry.pg_store import PgTelemetry

    url = server.create_database(f"bench_reserve_{random.randrange(1 << 30):x}")
    links = [Link(url, f"bench reserve {n}") for n in range(3)]
    PgTelemetry(links[0], node="bench-0")
    ledgers = [SharedSpend(link, f"bench-{n}") for n, link in enumerate(links)]
    ledgers[0].prepare()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO conveyor_tasks (task_id, path, agent, state, owner, fence, lease_until)"
                     " SELECT 'r' || n, 'assigned/bench/r' || n || '.yaml', 'bench', 'leased', 'bench-' || (n %% 3),"
                     " 1, now() + interval '1 hour' FROM generate_series(0, %s) AS n", (tasks - 1,))
    now = time.time()
    start = now - now % 86400
    caps = [Cap("global daily budget", start, start + 86400, None, None, 1e9)]
    admit: list[float] = []
    settle: list[float] = []
    lock = threading.Lock()

    def reserve(number: int) -> None:
        for task in range(number, tasks, 3):
            began = time.perf_counter()
            refused = ledgers[number].reserve(f"r{task}", agent="bench", tool="sleeper", usd=1.0, caps=caps, now=now)
            middle = time.perf_counter()
            ledgers[number].release(f"r{task}")
            ended = time.perf_counter()
            assert refused is None, refused
            with lock:
                admit.append(middle - began)
                settle.append(ended - middle)

    threads = [threading.Thread(target=reserve, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for link in links:
        link.close()

    def quantiles(values: list[float]) -> dict[str, float]:
        values.sort()
        return {"p50_ms": round(values[len(values) // 2] * 1000, 2),
                "p95_ms": round(values[int(len(values) * 0.95)] * 1000, 2), "max_ms": round(values[-1] * 1000, 2)}

    return {"reservations": len(admit), "nodes": 3, "reserve": quantiles(admit), "release": quantiles(settle)}


def bench_fleet(root: Path, quick: bool) -> dict[str, Any]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    server = PostgresServer().init()
    try:
        tasks = 24 if quick else 48
        rounds = [fleet_round(root, server, nodes, tasks) for nodes in (1, 2, 3)]
        one = rounds[0]["tasks_per_s"] or 1e-9
        return {"throughput": rounds,
                "speedup_2_nodes": round(rounds[1]["tasks_per_s"] / one, 2),
                "speedup_3_nodes": round(rounds[2]["tasks_per_s"] / one, 2),
                "goal_speedup_3_nodes": 2.7,
                "claim_latency": claim_latency(root, server, 300 if quick else 1000),
                "reserve_latency": reserve_latency(server, 300 if quick else 1000)}
    finally:
        server.destroy()
