"""The fleet's figures for scripts/bench.py (issue 12): throughput of 1, 2 and 3 daemon processes on one
board through one PostgreSQL server with a sleeping no-op agent (1 s per task, max_parallel 4 each), and
the latency of a claim (`take`) through PostgreSQL while three nodes take at once.

Needs the PostgreSQL server binaries (`apt-get install postgresql`); the server is a throwaway cluster.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml

from conveyor.coordination.postgres import PostgresCoordinator
from conveyor.core.task import parse_task
from conveyor.setup.init_repo import init_repository

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the throwaway server (tests/support/) comes from the source tree, not the wheel
from tests.support.postgres import PostgresServer  # noqa: E402

SLEEPING_AGENT = """#!/bin/sh
sleep 1
printf 'touched by %s\\n' "$1" >> touched.txt
"""


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


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


def _node_config(repo: Path, root: Path, name: str, url: str) -> Path:
    folder = root / f"config-{name}"
    shutil.copytree(repo / "config", folder)
    (folder / "daemon.yaml").write_text(yaml.safe_dump({
        "max_parallel": 4, "rescan_interval_s": 5, "attempts": 1, "remote": {"name": None},
        "roadmap": {"enabled": False}, "coordination": url, "lease_timeout_s": 30, "fleet_poll_s": 0.2,
        "state_dir": str(root / f"state-{name}"), "worktrees_dir": str(root / f"wt-{name}")}))
    return folder


def _alive_nodes(url: str) -> int:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM conveyor_nodes WHERE stopped_at IS NULL").fetchone()
        return int(row[0]) if row else 0
    return 0


def _done(repo: Path) -> int:
    done = repo / "work" / "collaboration" / "done"
    return sum(1 for _ in done.rglob("*.yaml")) if done.is_dir() else 0


def fleet_round(root: Path, server: PostgresServer, nodes: int, tasks: int) -> dict[str, Any]:
    repo = _repo(root)
    url = server.create_database(f"bench_{nodes}_{random.randrange(1 << 30):x}")
    procs = []
    home = root / f"{repo.name}-nodes"     # the nodes' own folders, outside the working tree
    home.mkdir()
    try:
        for number in range(nodes):
            config = _node_config(repo, home, f"n{number}", url)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "conveyor", "run", "--repo", str(repo), "--config-dir", str(config),
                 "--log-level", "warning"], cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=(home / f"n{number}.log").open("wb"), start_new_session=True))
        deadline = time.monotonic() + 120
        while _alive_nodes(url) < nodes:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a node did not start: " + "\n".join(
                    (home / f"n{n}.log").read_text(errors="replace")[-2000:] for n in range(nodes)))
            time.sleep(0.1)
        staging, inbox = home / "staging", repo / "work" / "collaboration" / "inbox"
        staging.mkdir(parents=True, exist_ok=True)
        for number in range(tasks):
            path = staging / f"f{number:04d}.yaml"
            path.write_text(yaml.safe_dump({"id": f"f{number:04d}", "agent": "bench", "status": "new",
                                            "title": "Sleep one second", "artefacts": ["touched.txt"]}))
            old = time.time() - 60
            os.utime(path, (old, old))
        started = time.monotonic()
        for path in sorted(staging.iterdir()):
            os.replace(path, inbox / path.name)
        deadline = started + 600
        while _done(repo) < tasks and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        finished = _done(repo)
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
    folder = root / "claims" / "assigned" / "bench"
    folder.mkdir(parents=True)
    takers = [PostgresCoordinator(url, lease_timeout_s=30, poll_s=1, host_lock=contextlib.nullcontext(),
                                  node=f"bench-{n}") for n in range(3)]
    takers[0].prepare()
    for number in range(rows):
        path = folder / f"c{number:05d}.yaml"
        path.write_text(f"id: c{number:05d}\nagent: bench\nstatus: assigned\ntitle: T\n")
        takers[0].enqueue(parse_task(path))
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
                "claim_latency": claim_latency(root, server, 300 if quick else 1000)}
    finally:
        server.destroy()
