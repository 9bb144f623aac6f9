"""History boards for scripts/bench.py: 1,000 and 100,000 finished tasks side by side.

For each board: `conveyor run` from start to `daemon.ready` and to its first status snapshot, `conveyor
status --format json` (median of 3) and peak RSS while idle, on the first start (which may build the
history table) and on a restart; beside them the other quick commands (`--help`, `stats --format json`,
`roadmap --format json`, median of 3 each). Goals (issue 12): ready <= 1 s, status <= 0.3 s, idle RSS
<= 80 MB, and each within 1.2x between the two boards.

With a baseline (`--history-baseline DIR`: the `daemon/` folder of another checkout, e.g. a git worktree of
an older commit), each board gets a third start with that code on the same board, measured the same way:
before and after side by side in one run.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
           "GIT_COMMITTER_EMAIL": "bench@localhost"}


def idle_usage(handle: psutil.Process, seconds: float, every: float) -> tuple[float, float]:
    """CPU seconds a process used over `seconds`, and its peak RSS in MB sampled every `every` seconds."""
    before, peak = handle.cpu_times(), 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, handle.memory_info().rss / 1e6)
        time.sleep(every)
    after = handle.cpu_times()
    return (after.user - before.user) + (after.system - before.system), peak


HISTORY_PER_DAY = 100     # a busy board: 100 finished tasks a day ...
HISTORY_IN_DONE = 500     # ... of which the last five days still sit in done/ (older ones were archived)
HISTORY_AGENTS = ("backend", "frontend", "docs", "ops")


def finished_doc(task_id: str, agent: str, completed: float, index: int) -> str:
    """A finished task as the daemon writes it (result block, claimed_by, timestamps), about 1 KB."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(completed))
    template = _FINISHED_TEMPLATES[index % 20 == 0]
    return (template.replace("TASKID", task_id).replace("AGENTNAME", agent).replace("STAMP", f"'{stamp}'")
            .replace("COMMITSHA", f"'{index:040x}'"))


def _finished_template(failed: bool) -> str:
    """One YAML dump with placeholders: dumping 100,000 documents one by one took 17 minutes on a busy
    machine, substituting into one dump takes seconds and writes the same bytes."""
    document: dict[str, Any] = {
        "id": "TASKID", "agent": "AGENTNAME", "status": "error" if failed else "done", "title": "History TASKID",
        "description": "Keep the history board realistic: a paragraph of what the author asked for, "
                       "with enough words to make the file about one kilobyte like a real task: what to change, "
                       "where, which tests prove it, and what must not break on the way.\n",
        "artefacts": ["src/app.py", "tests/test_app.py"], "priority": "normal", "dependencies": [],
        "created_at": "STAMP", "created_by": "bench", "claimed_by": "conveyor@bench:1", "assigned_at": "STAMP",
        "attempt": 1, "started_at": "STAMP", "completed_at": "STAMP"}
    if failed:
        document["error"] = {"message": "verify failed: pytest exited 1", "kind": "verify", "timestamp": "STAMP",
                             "log": ".git/conveyor/logs/TASKID/1.log"}
    else:
        document["result"] = {"summary": "Changed the app and its test as asked.", "branch": "conveyor/TASKID",
                              "commit": "COMMITSHA", "pr_url": None, "tool": "claude-code", "model": "sonnet",
                              "cost_usd": 0.0123, "duration_s": 42.0, "files_changed": ["src/app.py"],
                              "checks": [{"check": "completion gate", "result": "passed"}]}
    return yaml.safe_dump(document, sort_keys=False, width=200)


_FINISHED_TEMPLATES = {flag: _finished_template(flag) for flag in (False, True)}


def history_board(repo: Path, finished: int, now: float) -> None:
    """`finished` tasks at HISTORY_PER_DAY a day up to `now`: the newest HISTORY_IN_DONE in done/<agent>/,
    the rest in archive/YYYY-MM/ where the archive job leaves them."""
    board = repo / "work" / "collaboration"
    folders: set[Path] = set()
    for index in range(finished):
        age = (finished - 1 - index) * 86_400 / HISTORY_PER_DAY
        completed = now - 3600 - age
        agent = HISTORY_AGENTS[index % len(HISTORY_AGENTS)]
        task_id = f"hist-{index:06d}"
        if finished - index <= HISTORY_IN_DONE:
            folder = board / "done" / agent
        else:
            folder = board / "archive" / time.strftime("%Y-%m", time.gmtime(completed))
        if folder not in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        (folder / f"{task_id}.yaml").write_text(finished_doc(task_id, agent, completed, index))


QUICK_COMMANDS = {"help_s": ["--help"], "stats_s": ["stats", "--format", "json"],
                  "roadmap_s": ["roadmap", "--format", "json"]}


def command_times(args: list[str], repo: Path, env: dict[str, str], repeats: int = 3) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of `conveyor ARGS` in `repo`, a fresh process each
    time as a person runs it. The CPU time hardly moves with the machine's load; the wall time does."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=repo, env=env, check=True, capture_output=True)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return round(statistics.median(walls), 3), round(statistics.median(cpus), 3)


def history_once(root: Path, finished: int, idle_s: float, make_repo: Callable[..., Path],
                 wait_until: Callable[..., bool], log: Callable[[str], None],
                 baseline: Path | None = None) -> dict[str, Any]:
    repo = make_repo(root, 10)
    started = time.perf_counter()
    history_board(repo, finished, time.time())
    log(f"history: {finished:,} finished tasks written in {time.perf_counter() - started:.1f} s")
    subprocess.run(["sync"], check=False)
    state = repo / ".git" / "conveyor"
    results: dict[str, Any] = {"finished": finished}
    runs = ("first", "restart", *(("baseline",) if baseline else ()))
    for run in runs:    # the first start may build what a restart then reuses
        env = {**os.environ, **GIT_ENV, **({"PYTHONPATH": str(baseline)} if run == "baseline" else {})}
        log_path = root / f"history-{finished}-{run}.log"
        with log_path.open("wb") as log_file:
            (state / "status.json").unlink(missing_ok=True)
            began = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "conveyor", "run", "--repo", str(repo), "--json-logs"],
                                    stdout=subprocess.DEVNULL, stderr=log_file, env=env)
            handle = psutil.Process(proc.pid)
            try:
                wait_until(lambda path=log_path: b'"daemon.ready"' in path.read_bytes(), 300, 0.01)  # type: ignore[misc]
                ready = time.perf_counter() - began
                wait_until((state / "status.json").exists, 300, 0.01)
                first_pass = time.perf_counter() - began
                time.sleep(2.0)   # settle: the first periodic jobs run
                status_s, status_cpu_s = command_times(["status", "--format", "json", "--repo", str(repo)], repo, env)
                cpu, peak = idle_usage(handle, idle_s, 0.25)
                cpu_after = handle.cpu_times()
                quick = {}
                for key, args in QUICK_COMMANDS.items():
                    quick[key], quick[key.removesuffix("_s") + "_cpu_s"] = command_times(args, repo, env)
                if run == "first" and b'"history.rebuild_started"' in log_path.read_bytes():
                    # the first start indexes the finished tasks in the background: let it finish, so the
                    # restart measures the steady state
                    began_rebuild = time.perf_counter()
                    wait_until(lambda path=log_path: b'"history.rebuilt"' in path.read_bytes(),  # type: ignore[misc]
                               3600, 0.5)
                    results["rebuild_wait_s"] = round(time.perf_counter() - began_rebuild, 1)
                    results["rebuild_cpu_s"] = round(sum(handle.cpu_times()[:2]) - sum(cpu_after[:2]), 1)
            finally:
                proc.terminate()
                proc.wait(timeout=120)
        results[run] = {"ready_s": round(ready, 3), "first_pass_s": round(first_pass, 3),
                        "status_s": status_s, "status_cpu_s": status_cpu_s, "idle_rss_mb": round(peak, 1),
                        "idle_cpu_percent": round(100 * cpu / idle_s, 2), **quick}
        log(f"history {finished:,} ({run}): {results[run]}")
    return results


def bench_history(root: Path, sizes: list[int], idle_s: float, make_repo: Callable[..., Path],
                  wait_until: Callable[..., bool], log: Callable[[str], None],
                  baseline: Path | None = None) -> dict[str, Any]:
    boards = {str(size): history_once(root, size, idle_s, make_repo, wait_until, log, baseline) for size in sizes}
    report: dict[str, Any] = {"boards": boards, "per_day": HISTORY_PER_DAY, "in_done": HISTORY_IN_DONE,
                              "goals": {"ready_s": 1.0, "status_s": 0.3, "idle_rss_mb": 80.0, "ratio": 1.2}}
    if len(sizes) == 2:
        small, large = (boards[str(size)]["restart"] for size in sizes)
        report["ratio_large_to_small"] = {key: round(large[key] / small[key], 3) if small[key] else None
                                          for key in ("ready_s", "status_s", "idle_rss_mb")}
        report["met"] = all(board["restart"]["ready_s"] <= 1.0 and board["restart"]["status_s"] <= 0.3
                            and board["restart"]["idle_rss_mb"] <= 80.0 for board in boards.values()) and all(
            ratio is not None and ratio <= 1.2 for ratio in report["ratio_large_to_small"].values())
    return report
