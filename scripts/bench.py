#!/usr/bin/env python3
"""The daemon's own cost, measured side by side with its floor in one run; one JSON document on stdout.

Scenarios (scripts/bench.py, issue 6):
  drop_to_spawn_ms  a task renamed into inbox/ → the agent process starts, next to a bare watchdog observer
  overhead          full pipeline per task with a no-op agent, next to a bare-git shell loop (small, 20k files)
  workspace         making and removing a task's workspace (a repository of its own, issue 14) next to a
                    linked `git worktree add` + `worktree remove` of the same commit (small, 20k files)
  flood             1,000 tasks dropped at once, max_parallel 1/2/4: time to claim all, tasks/s, lost, doubled
  idle              CPU and peak RSS of `conveyor run` for 60 s with an empty inbox and 1,000 tasks in done/
  stats_1m_s        `conveyor stats --by model --format json` over 1,000,000 telemetry rows
  cycle_vs_30s      time to claim 1,000 tasks over the seed orchestrator's 30 s cycle budget
  soak              1,000 tasks through one daemon process: open fds and RSS at start and end
  history           boards of 1,000 and 100,000 finished tasks side by side: daemon ready, `conveyor status`
                    and idle RSS (goals: <= 1 s, <= 0.3 s, <= 80 MB, each within 1.2x between the boards)
  dashboard         first byte of the board page and SSE event latency after a file move (p50/p95), and
                    the daemon's idle CPU alone and with a dashboard client connected (scripts/bench_dashboard.py)
  fleet             1, 2 and 3 daemons, each in its own clone of one remote, through PostgreSQL (1 s no-op
                    agent, max_parallel 4): tasks/s from the push to the inbox until the board branch shows
                    them done, and speed-up; claim latency p50/p95 (scripts/bench_fleet.py)
  pr_watch          the PR watcher over 100 open pull requests (FakeGitHub): a cold pass, idle passes with
                    its ETags (rate-limit cost), and an idle pass without them (scripts/bench_pr_watch.py)
  follow_up         follow-ups on one open pull request (FakeGitHub, a real bare origin, the scripted agent):
                    the daemon's time besides the agent and the GitHub requests per follow-up, beside the
                    task that opened the PR (scripts/bench_follow_up.py)

`--quick` runs a subset sized to about a minute. Progress goes to stderr; the JSON goes to stdout (and to
`--out FILE` when given).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

import conveyor
from bench_history import GIT_ENV, bench_history, idle_usage  # beside this script (its folder is on sys.path)
from conveyor.config import load_config
from conveyor.core.logs import configure_logging
from conveyor.daemon.loop import Daemon
from conveyor.setup.init_repo import init_repository
from conveyor.workspace import git as conveyor_git
from conveyor.workspace import task_workspace

NOOP_AGENT = """#!/bin/sh
# No-op agent: change one file (when it started is telemetry's invocation start, see spawn_times).
printf 'touched by %s\\n' "$1" >> touched.txt
"""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------- fixtures
def make_repo(root: Path, files: int, max_parallel: int = 1, sandbox: str = "auto") -> Path:
    """A git repo with `files` tracked files, Conveyor initialised, and the no-op agent as the only tool."""
    repo = root / f"repo-{files}-{random.randrange(1 << 30):x}"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for index in range(files):
        folder = repo / "src" / f"pkg{index // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{index}.py").write_text(f"VALUE = {index}\n")
    (repo / "README.md").write_text("bench\n")
    init_repository(repo)
    agent = root / "noop-agent.sh"
    agent.write_text(NOOP_AGENT)
    agent.chmod(0o755)
    config = repo / "config"
    tool: dict[str, Any] = {"binary": str(agent), "argv": ["{task_id}"], "parser": "text", "prompt_via": "stdin",
                            "env_allowlist": ["PATH", "HOME", "LANG"], "sandbox": sandbox}
    (config / "tools.yaml").write_text(yaml.safe_dump({"tools": {"noop": tool}}))
    (config / "agents.yaml").write_text(yaml.safe_dump({"agents": {"default": {"tool": "noop", "fallback": []}}}))
    (config / "daemon.yaml").write_text(yaml.safe_dump({
        "max_parallel": max_parallel, "rescan_interval_s": 5, "attempts": 1, "remote": {"name": None},
        "roadmap": {"enabled": False}}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "bench fixture")
    return repo


def task_doc(task_id: str) -> str:
    return yaml.safe_dump({"id": task_id, "agent": "bench", "status": "new", "title": f"Bench {task_id}",
                           "description": "Touch one file.", "artefacts": ["touched.txt"]}, sort_keys=False)


def drop(inbox: Path, task_id: str) -> float:
    """Write the task beside inbox/ and rename it in (as authors should); returns the rename time."""
    staging = inbox.parent / ".staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{task_id}.yaml"
    tmp.write_text(task_doc(task_id))
    moment = time.time()
    os.rename(tmp, inbox / f"{task_id}.yaml")
    return moment


def load(repo: Path) -> Any:
    return load_config(repo, conveyor_git.common_git_dir(repo))


@contextlib.contextmanager
def daemon_thread(repo: Path, *, watch: bool = True) -> Iterator[Daemon]:
    daemon = Daemon(load(repo), env={**os.environ, **GIT_ENV}, watch=watch)
    thread = threading.Thread(target=daemon.run, name="bench-daemon", daemon=True)
    thread.start()
    while not (daemon.config.state_dir / "status.json").exists():
        time.sleep(0.01)
    try:
        yield daemon
    finally:
        daemon.request_stop()
        thread.join(timeout=120)


def done_count(repo: Path) -> int:
    """Finished bench tasks (all use agent `bench`): one listdir, cheap enough to poll beside the daemon
    (which runs in this process and shares its GIL)."""
    try:
        return sum(1 for name in os.listdir(repo / "work" / "collaboration" / "done" / "bench")
                   if name.endswith(".yaml"))
    except FileNotFoundError:
        return 0


def wait_until(predicate: Any, timeout_s: float, poll_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


# ---------------------------------------------------------------- 1. drop → spawn
class _Stamp(FileSystemEventHandler):
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = str(getattr(event, "dest_path", "") or event.src_path)
        if path.endswith(".yaml"):
            self.seen.setdefault(Path(path).stem, time.time())


def bench_drop_to_spawn(root: Path, drops: int) -> dict[str, float]:
    """A task renamed into inbox/ → its agent started, as telemetry records the invocation's start (a mark
    the agent wrote itself cannot leave a sandboxed workspace); next to a bare watchdog observer's event."""
    log(f"drop→spawn: {drops} drops, next to a bare watchdog observer")
    repo = make_repo(root, 10, max_parallel=4)
    inbox = repo / "work" / "collaboration" / "inbox"
    floor_dir = root / "floor-inbox"
    floor_dir.mkdir()
    stamp = _Stamp()
    observer = Observer()
    observer.schedule(stamp, str(floor_dir), recursive=False)
    observer.start()
    starts: dict[str, float] = {}
    floor_ms: list[float] = []
    try:
        with daemon_thread(repo):
            for index in range(drops):
                floor_id, task_id = f"floor-{index:04d}", f"drop-{index:04d}"
                start = drop(floor_dir, floor_id)
                if wait_until(lambda f=floor_id: f in stamp.seen, 5):  # type: ignore[misc]
                    floor_ms.append((stamp.seen[floor_id] - start) * 1000)
                starts[task_id] = drop(inbox, task_id)
                wait_until(lambda n=index + 1: done_count(repo) >= n, 30, 0.02)  # type: ignore[misc]
                time.sleep(0.02)
            wait_until(lambda: done_count(repo) >= drops, 120, 0.05)
    finally:
        observer.stop()
        observer.join()
    spawned = spawn_times(repo)
    conveyor_ms = [(spawned[task_id] - start) * 1000 for task_id, start in starts.items() if task_id in spawned]
    return {"p50": round(statistics.median(conveyor_ms), 2), "p95": round(percentile(conveyor_ms, 0.95), 2),
            "floor_p50": round(statistics.median(floor_ms), 2), "floor_p95": round(percentile(floor_ms, 0.95), 2),
            "n": len(conveyor_ms), "timed_from": "telemetry invocation start"}


def assign(assigned: Path, task_id: str) -> float:
    """Assign a task as the workflow's orchestrator does: `status: assigned` renamed into assigned/<agent>/."""
    staging = assigned.parent.parent / ".staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / f"{task_id}.yaml"
    tmp.write_text(task_doc(task_id).replace("status: new", "status: assigned"))
    assigned.mkdir(parents=True, exist_ok=True)
    moment = time.time()
    os.rename(tmp, assigned / f"{task_id}.yaml")
    return moment


def spawn_times(repo: Path) -> dict[str, float]:
    """When each task's agent was started (telemetry's invocation start, epoch seconds): a mark the agent
    writes itself cannot leave a sandboxed workspace."""
    db = load(repo).telemetry_db
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {str(task_id): float(at) for task_id, at in
                conn.execute("SELECT task_id, MIN(started_at) FROM invocations GROUP BY task_id")}


def bench_assign_to_spawn(root: Path, drops: int) -> dict[str, float]:
    """A task another process assigns into assigned/<agent>/ while the daemon runs, against an inbox drop
    into the same daemon, alternated so both see the same load (start: the rename; end: the agent's start
    as telemetry records it)."""
    log(f"assign→spawn: {drops} tasks assigned into assigned/bench/, {drops} dropped into inbox/, alternated")
    repo = make_repo(root / "assign", 10, max_parallel=4)
    board = repo / "work" / "collaboration"
    starts: dict[str, float] = {}
    with daemon_thread(repo):
        for index in range(drops):
            for kind in ("inbox", "assigned"):
                task_id = f"{kind}-{index:04d}"
                starts[task_id] = drop(board / "inbox", task_id) if kind == "inbox" else \
                    assign(board / "assigned" / "bench", task_id)
                wait_until(lambda t=task_id: done_count(repo) >= len(starts), 30, 0.02)  # type: ignore[misc]
        wait_until(lambda: done_count(repo) >= 2 * drops, 120, 0.05)
    spawned = spawn_times(repo)
    times = {kind: [(spawned[t] - start) * 1000 for t, start in starts.items() if t.startswith(kind) and t in spawned]
             for kind in ("inbox", "assigned")}
    inbox, assigned = times["inbox"], times["assigned"]
    return {"inbox_p50": round(statistics.median(inbox), 2), "inbox_p95": round(percentile(inbox, 0.95), 2),
            "assigned_p50": round(statistics.median(assigned), 2),
            "assigned_p95": round(percentile(assigned, 0.95), 2), "n": len(assigned), "rescan_interval_s": 5}


# ---------------------------------------------------------------- 2. per-task overhead
FLOOR_LOOP = r"""
set -e
cd "$1"
for i in $(seq "$2" "$3"); do
  git worktree add -q -b "floor/$i" "$4/w$i" main
  printf 'touched by %s\n' "$i" >> "$4/w$i/touched.txt"
  git -C "$4/w$i" add -A
  git -C "$4/w$i" commit -q --no-verify -m "floor $i"
  git worktree remove --force "$4/w$i"
done
"""


def bench_overhead(root: Path, files: int, rounds: int, per_round: int, sandbox: str = "bwrap") -> dict[str, Any]:
    """Rounds alternate: `per_round` tasks by the shell loop, then `per_round` by the daemon, on one repo.

    Interleaving matters on a shared machine: the disk's speed drifts by 2x within minutes (a 20,000-file
    `git worktree add` took 6 s in one minute and 12 s in the next), and two long blocks run minutes apart
    would measure the drift, not the daemon. The ratio is of the per-round medians.
    """
    tasks = (rounds + 1) * per_round   # + one untimed warm-up round
    log(f"overhead: {tasks} tasks on a {files}-file repository, alternating with a bare-git shell loop")
    repo = make_repo(root, files, sandbox=sandbox)
    scratch = root / f"floor-worktrees-{files}-{sandbox}"
    scratch.mkdir()
    inbox = repo / "work" / "collaboration" / "inbox"
    staging = inbox.parent / ".staging"
    staging.mkdir()
    for index in range(tasks):
        (staging / f"overhead-{index:04d}.yaml").write_text(task_doc(f"overhead-{index:04d}"))

    def floor_round(first: int) -> float:
        started = time.perf_counter()
        subprocess.run(["bash", "-c", FLOOR_LOOP, "floor", str(repo), str(first + 1), str(first + per_round),
                        str(scratch)], check=True, env={**os.environ, **GIT_ENV})
        return (time.perf_counter() - started) / per_round

    def conveyor_round(first: int) -> float:
        started = time.perf_counter()
        for index in range(first, first + per_round):
            os.rename(staging / f"overhead-{index:04d}.yaml", inbox / f"overhead-{index:04d}.yaml")
        wait_until(lambda: done_count(repo) >= first + per_round, 3600, 0.002)
        return (time.perf_counter() - started) / per_round

    floor_s: list[float] = []
    conveyor_s: list[float] = []
    # Steady state, like the shell loop: the daemon is already up (start-up and shutdown are not per-task
    # costs); each round's clock runs from its tasks' arrival to the last one done. Round 0 warms the page
    # cache and git's object store for both and is not counted; after it, who goes first alternates, so
    # neither side always inherits the other's pending disk writeback.
    with daemon_thread(repo):
        for round_index in range(rounds + 1):
            first = round_index * per_round
            if round_index % 2:
                measured = (floor_round(first), conveyor_round(first))
            else:
                conveyor, floor = conveyor_round(first), floor_round(first)
                measured = (floor, conveyor)
            if round_index:
                floor_s.append(measured[0])
                conveyor_s.append(measured[1])
    assert done_count(repo) == tasks, f"only {done_count(repo)} of {tasks} tasks finished"
    conveyor, floor = statistics.median(conveyor_s), statistics.median(floor_s)
    return {"conveyor_s": round(conveyor, 4), "floor_s": round(floor, 4), "ratio": round(conveyor / floor, 3),
            "files": files, "tasks": rounds * per_round, "rounds": rounds, "sandbox": sandbox,
            "ratio_by_round": [round(c / f, 3) for c, f in zip(conveyor_s, floor_s, strict=True)]}


# ---------------------------------------------------------------- 2b. workspace creation
def bench_workspace(root: Path, files: int, rounds: int) -> dict[str, Any]:
    """Create and remove one task workspace, alternating with a linked worktree of the same commit.

    Both check out every file once (the workspace with `read-tree -u` through the daemon's view, the
    worktree with `worktree add`); the workspace then writes a few small files for the agent's own `.git`
    and copies the index, and is removed with a plain recursive delete instead of `worktree remove`. Rounds
    alternate who goes first, for the same reason as the overhead scenario (disk drift on a shared host).
    """
    log(f"workspace: {rounds} rounds of create + remove on a {files}-file repository, beside git worktree")
    repo = make_repo(root, files)
    git_dir = repo / ".git"
    places = root / f"workspace-bench-{files}"
    places.mkdir()

    def workspace_round(index: int) -> tuple[float, float]:
        path, view = places / f"ws{index}", places / f"view{index}"
        started = time.perf_counter()
        task_workspace.create(repo, git_dir, path, view, f"conveyor/ws{index}", "main")
        made = time.perf_counter()
        task_workspace.remove(path, view)
        return made - started, time.perf_counter() - made

    def worktree_round(index: int) -> tuple[float, float]:
        path = places / f"wt{index}"
        started = time.perf_counter()
        git(repo, "worktree", "add", "-q", "-b", f"floor/wt{index}", str(path), "main")
        made = time.perf_counter()
        git(repo, "worktree", "remove", "--force", str(path))
        return made - started, time.perf_counter() - made

    workspace_s: list[tuple[float, float]] = []
    worktree_s: list[tuple[float, float]] = []
    for index in range(rounds + 1):   # round 0 warms the page cache and is not counted
        if index % 2:
            pair = (workspace_round(index), worktree_round(index))
        else:
            second = worktree_round(index)
            pair = (workspace_round(index), second)
        if index:
            workspace_s.append(pair[0])
            worktree_s.append(pair[1])

    def median(values: list[tuple[float, float]], which: int) -> float:
        return statistics.median(value[which] for value in values)

    def total(values: list[tuple[float, float]]) -> float:
        return statistics.median(sum(value) for value in values)

    return {"files": files, "rounds": rounds,
            "workspace_create_s": round(median(workspace_s, 0), 4), "worktree_add_s": round(median(worktree_s, 0), 4),
            "workspace_remove_s": round(median(workspace_s, 1), 4),
            "worktree_remove_s": round(median(worktree_s, 1), 4),
            "create_ratio": round(median(workspace_s, 0) / median(worktree_s, 0), 3),
            "create_and_remove_ratio": round(total(workspace_s) / total(worktree_s), 3)}


# ---------------------------------------------------------------- 3. flood (+ 6. cycle, 7. soak)
@contextlib.contextmanager
def daemon_process(repo: Path) -> Iterator[psutil.Process]:
    """`conveyor run` as a real process: tasks arrive from another process, as they do in use, and the
    daemon's own fds and memory can be read from outside."""
    log_file = (repo.parent / f"{repo.name}-daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "run", "--repo", str(repo), "--json-logs"],
                            stdout=subprocess.DEVNULL, stderr=log_file, env={**os.environ, **GIT_ENV})
    try:
        if not wait_until((repo / ".git" / "conveyor" / "status.json").exists, 60, 0.02):
            raise RuntimeError(f"the daemon did not start; see {log_file.name}")
        yield psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log_file.close()


def inbox_empty(inbox: Path) -> bool:
    with os.scandir(inbox) as entries:
        return not any(entry.name.endswith(".yaml") for entry in entries)


def flood_once(root: Path, tasks: int, parallel: int) -> dict[str, Any]:
    repo = make_repo(root, 10, max_parallel=parallel)
    inbox = repo / "work" / "collaboration" / "inbox"
    staging = repo / "work" / "collaboration" / ".staging"
    staging.mkdir()
    for index in range(tasks):
        (staging / f"flood-{index:04d}.yaml").write_text(task_doc(f"flood-{index:04d}"))
    with daemon_process(repo) as daemon:
        started = time.perf_counter()
        for index in range(tasks):
            os.rename(staging / f"flood-{index:04d}.yaml", inbox / f"flood-{index:04d}.yaml")
        dropped = time.perf_counter()
        wait_until(lambda: inbox_empty(inbox), 120, 0.002)
        claimed = time.perf_counter()
        # Resources once warm (a tenth of the tasks done) and at the end: growth would be a leak.
        wait_until(lambda: done_count(repo) >= tasks // 10, 1800, 0.05)
        fd_start, rss_start = daemon.num_fds(), daemon.memory_info().rss / 1e6
        finished = wait_until(lambda: done_count(repo) >= tasks, 1800, 0.05)
        ended = time.perf_counter()
        fd_end, rss_end = daemon.num_fds(), daemon.memory_info().rss / 1e6
    names = [p.name for p in (repo / "work" / "collaboration" / "done").rglob("*.yaml")]
    branches = git(repo, "branch", "--list", "conveyor/*").split()
    return {"claim_all_s": round(claimed - dropped, 4), "drop_s": round(dropped - started, 4),
            "total_s": round(ended - started, 3), "tasks_per_s": round(tasks / (ended - started), 2),
            "finished": finished, "lost": tasks - len(set(names)), "doubled": len(names) - len(set(names)),
            "branches": len(branches), "fd_start": fd_start, "fd_end": fd_end,
            "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1)}


def bench_flood(root: Path, tasks: int, parallels: list[int]) -> dict[str, Any]:
    result: dict[str, Any] = {"n": tasks, "tasks_per_s": {}, "claim_all_s_by_parallel": {}, "lost": 0, "doubled": 0}
    for parallel in parallels:
        log(f"flood: {tasks} tasks at once, max_parallel {parallel}")
        run = flood_once(root, tasks, parallel)
        result["tasks_per_s"][str(parallel)] = run["tasks_per_s"]
        result["claim_all_s_by_parallel"][str(parallel)] = run["claim_all_s"]
        result["lost"] += run["lost"]
        result["doubled"] += run["doubled"]
        result.setdefault("runs", {})[str(parallel)] = run
    result["claim_all_s"] = max(result["claim_all_s_by_parallel"].values())
    return result


# ---------------------------------------------------------------- 4. idle
def bench_idle(root: Path, seconds: float, done_tasks: int) -> dict[str, float]:
    log(f"idle: `conveyor run` for {seconds:.0f} s, empty inbox, {done_tasks} tasks in done/")
    repo = make_repo(root, 10)
    done_dir = repo / "work" / "collaboration" / "done" / "bench"
    done_dir.mkdir(parents=True)
    for index in range(done_tasks):
        document = yaml.safe_load(task_doc(f"old-{index:04d}"))
        document.update({"status": "done", "completed_at": "2026-11-01T00:00:00Z",
                         "result": {"summary": "ok", "artefacts": ["touched.txt"]}})
        (done_dir / f"old-{index:04d}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    proc = subprocess.Popen([sys.executable, "-m", "conveyor", "run", "--repo", str(repo), "--json-logs"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **GIT_ENV})
    handle = psutil.Process(proc.pid)
    state = repo / ".git" / "conveyor" / "status.json"
    wait_until(state.exists, 30, 0.05)
    time.sleep(2)  # settle after start-up (imports, recovery, first scan)
    cpu, peak = idle_usage(handle, seconds, 0.5)
    proc.terminate()
    proc.wait(timeout=60)
    return {"cpu_percent": round(100 * cpu / seconds, 3), "rss_mb": round(peak, 1), "seconds": seconds,
            "cpu_s": round(cpu, 3)}


# ---------------------------------------------------------------- 5. stats
def telemetry_rows(rows: int) -> Iterator[tuple[Any, ...]]:
    """Plausible invocation rows over 400 days (seeded, so every run measures the same data)."""
    rng = random.Random(7)
    agents = [f"agent-{i}" for i in range(12)]
    tools = ["claude-code", "codex", "gemini"]
    models = ["opus", "sonnet", "haiku", "gpt-5.5", "gpt-5", "gpt-5-mini"]
    outcomes = ["ok"] * 8 + ["agent_error", "timeout", "rate_limited"]
    start = time.time() - 400 * 86400
    for index in range(rows):
        started = start + index * (400 * 86400 / rows)
        duration = rng.lognormvariate(4, 1)
        yield (f"task-{index // 2}", rng.choice(agents), rng.choice(tools), rng.choice(models), 1 + index % 2,
               started, started + duration, duration, 0, rng.choice(outcomes), rng.randrange(10_000),
               rng.randrange(2_000), rng.randrange(50_000), rng.randrange(5_000), round(rng.random() / 3, 6),
               "reported")


def seed_telemetry(db: Path, rows: int) -> None:
    """A bulk load: rows in without the per-row rollup trigger, then the rollups rebuilt in one pass by the
    schema's own backfill (which also recreates the trigger), as a migration of an old database would."""
    from conveyor.telemetry.schema import rollup_statements
    from conveyor.telemetry.store import Telemetry

    Telemetry(db).close()  # creates the schema at the current version
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("DROP TRIGGER IF EXISTS invocations_stats_insert")
        generated = telemetry_rows(rows)
        while batch := list(itertools.islice(generated, 50_000)):
            conn.executemany(INSERT, batch)
        conn.execute("DELETE FROM stats_rollup")
        conn.execute("DELETE FROM stats_histogram")
        for statement in rollup_statements():
            conn.execute(statement)


INSERT = ("INSERT INTO invocations (task_id, agent, tool, model, attempt, started_at, finished_at, duration_s,"
          " exit_code, outcome, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd,"
          " cost_source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")


def bench_stats(root: Path, rows: int, repeats: int) -> dict[str, Any]:
    log(f"stats: seeding {rows:,} telemetry rows")
    repo = make_repo(root, 10)
    db = repo / ".git" / "conveyor" / "telemetry.db"
    seed_telemetry(db, rows)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "conveyor", "stats", "--by", "model", "--format", "json",
                              "--repo", str(repo)], check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        json.loads(out.stdout)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import conveyor.cli.main"], check=True)
    import_s = time.perf_counter() - started
    return {"median_s": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times],
            "python_startup_and_imports_s": round(import_s, 3), "rows": rows}


# ---------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu": cpu, "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "git": git(Path.cwd(), "--version").strip(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fleet_scenario(report: dict[str, Any], wanted: set[str], root: Path, quick: bool) -> None:
    if "fleet" in wanted:
        log("fleet: 1, 2 and 3 daemons in their own clones through one PostgreSQL server")
        from bench_fleet import bench_fleet  # beside this script; it needs psycopg and the server binaries

        report["fleet"] = bench_fleet(root, quick)


def pr_watch_scenario(report: dict[str, Any], wanted: set[str], root: Path, quick: bool) -> None:
    if "pr_watch" in wanted:
        log("pr_watch: the PR watcher over open pull requests, with and without its ETags")
        from bench_pr_watch import bench_pr_watch  # beside this script

        report["pr_watch"] = bench_pr_watch(root, 30 if quick else 100, 3)


def follow_up_scenario(report: dict[str, Any], wanted: set[str], root: Path, quick: bool) -> None:
    if "follow_up" in wanted:
        log("follow_up: follow-ups on one open pull request, the daemon's part and GitHub requests")
        from bench_follow_up import bench_follow_up  # beside this script

        report["follow_up"] = bench_follow_up(root / "follow-up", 3 if quick else 10)


def history_scenario(report: dict[str, Any], wanted: set[str], root: Path, boards: list[int], idle_s: float,
                     baseline: Path | None) -> None:
    if "history" in wanted:

        if baseline is not None:   # compiled as pip compiles an installed package, like ours below
            compileall.compile_dir(str(baseline / "conveyor"), quiet=1, force=False)
            report["history_baseline"] = str(baseline)
        report["history"] = bench_history(root, boards, idle_s, make_repo, wait_until, log, baseline)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a subset sized to about a minute")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument("--history-sizes", type=int, nargs="*", default=[1_000, 100_000],
                        help="finished tasks on the history boards (default 1000 100000)")
    parser.add_argument("--history-baseline", type=Path, default=None,
                        help="also start each history board with the conveyor package under this folder (the "
                             "daemon/ folder of another checkout): before and after in one run")
    args = parser.parse_args()
    quick = args.quick
    sizes = {"drops": 40 if quick else 200, "small_rounds": 2 if quick else 6, "large_tasks": 3 if quick else 4,
             "large_files": 20_000, "flood": 200 if quick else 1000, "parallels": [2] if quick else [1, 2, 4],
             "idle_s": 10.0 if quick else 60.0, "rows": 200_000 if quick else 1_000_000,
             "repeats": 3 if quick else 5, "history_idle_s": 5.0 if quick else 15.0}
    wanted = set(args.only or ["drop", "overhead", "workspace", "flood", "idle", "stats", "soak", "dashboard",
                               "fleet", "history", "pr_watch", "follow_up"])
    report: dict[str, Any] = {"machine": machine(), "quick": quick}
    # An installed Conveyor has its bytecode compiled (pip does it at install time); a checkout run with
    # PYTHONDONTWRITEBYTECODE would recompile every module in every `conveyor` process we start.
    report["machine"]["bytecode_precompiled"] = compileall.compile_dir(
        str(Path(conveyor.__file__).parent), quiet=1, force=False)
    root = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    os.environ.update(GIT_ENV)
    os.environ["XDG_STATE_HOME"] = str(root / "state")   # worktrees go here, not into the real home
    configure_logging(level="warning", stream=sys.stderr)
    try:
        if "drop" in wanted:
            report["drop_to_spawn_ms"] = bench_drop_to_spawn(root, sizes["drops"])
            report["assign_to_spawn_ms"] = bench_assign_to_spawn(root, sizes["drops"] // 2)
        if "overhead" in wanted:
            # the agent in bubblewrap (the default where it works) beside the same run uncontained
            report["overhead"] = {"small": bench_overhead(root, 10, sizes["small_rounds"], 10),
                                  "small_no_sandbox": bench_overhead(root, 10, sizes["small_rounds"], 10, "none")}
            if not quick:
                report["overhead"]["large"] = bench_overhead(root, sizes["large_files"], sizes["large_tasks"], 1)
                report["overhead"]["large_no_sandbox"] = bench_overhead(root, sizes["large_files"],
                                                                        sizes["large_tasks"], 1, "none")
        if "workspace" in wanted:
            report["workspace"] = {"small": bench_workspace(root, 10, 6 if quick else 20)}
            if not quick:
                report["workspace"]["large"] = bench_workspace(root, sizes["large_files"], 4)
        if "flood" in wanted:
            report["flood"] = bench_flood(root, sizes["flood"], sizes["parallels"])
            claim = report["flood"]["claim_all_s"]
            report["cycle_vs_30s_ratio"] = round(claim / 30.0, 6)
        if "idle" in wanted:
            report["idle"] = bench_idle(root, sizes["idle_s"], 1000)
        if "stats" in wanted:
            stats = bench_stats(root, sizes["rows"], sizes["repeats"])
            report["stats_1m_s"] = stats["median_s"]
            report["stats_detail"] = stats
        if "soak" in wanted:
            tasks = 200 if quick else 1000
            log(f"soak: {tasks} tasks through one daemon process (fds and RSS of that process)")
            run = flood_once(root, tasks, 2)
            report["soak"] = {"tasks": tasks, "fd_start": run["fd_start"], "fd_end": run["fd_end"],
                              "rss_start_mb": run["rss_start_mb"], "rss_end_mb": run["rss_end_mb"],
                              "lost": run["lost"], "doubled": run["doubled"]}
        history_scenario(report, wanted, root, args.history_sizes, sizes["history_idle_s"], args.history_baseline)
        if "dashboard" in wanted:
            from bench_dashboard import bench_dashboard  # scripts/ is on sys.path when run as a script

            report["dashboard"] = bench_dashboard(root, make_repo, drop, 30 if quick else 100,
                                                  sizes["idle_s"] / 2, percentile, log)
        fleet_scenario(report, wanted, root, quick)
        pr_watch_scenario(report, wanted, root, quick)
        follow_up_scenario(report, wanted, root, quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
