#!/usr/bin/env python3
"""`make demo`: Conveyor's main job, for real, on a scratch repository.

It makes a small git repository, runs `conveyor init`, starts the daemon, drops a task with
`conveyor submit`, waits for the agent's commit, and shows the branch, the commit, the finished task
file and its telemetry row.

The agent is the real `claude` CLI. With a working claude login (ANTHROPIC_API_KEY or
~/.claude/.credentials.json, and `claude` on PATH) it uses that. Otherwise it runs the pinned claude CLI
against Conveyor's own scripted model on 127.0.0.1 and says so: that model is a script, not an AI.
Set CONVEYOR_DEMO_OFFLINE=1 to force the offline model even when you are logged in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # the test tools (tests/support/) come from the source tree, not the wheel
PY = sys.executable
TASK_TITLE = "Add a greeting module"
TASK_TEXT = ("Create hello.py with a function greet(name) that returns a friendly greeting, and make "
             "`python hello.py` print a greeting for Conveyor.")


def main() -> int:
    scratch = ROOT / ".demo" / time.strftime("%Y%m%d-%H%M%S")
    repo = scratch / "repo"
    banner("Conveyor demo")
    print(f"scratch repository: {repo}")
    make_repository(repo)
    conveyor(repo, "init")
    env, stop_model = agent_environment(scratch)
    configure(repo, env)
    daemon_log = scratch / "daemon.log"
    daemon = start_daemon(repo, env, daemon_log)
    try:
        task_path = Path(conveyor(repo, "submit", "--agent", "backend-dev", "--title", TASK_TITLE,
                                  "--description", TASK_TEXT, "--artefact", "hello.py",
                                  capture=True).strip())
        task_id = task_path.stem
        print(f"submitted task {task_id}\n  {task_path.relative_to(repo)}")
        done = wait_for_done(repo, task_id, daemon, timeout_s=180)
        show_results(repo, task_id, done)
    finally:
        stop(daemon)
        stop_model()
    print(f"\ndaemon log: {daemon_log}\nexplore:    cd {repo} && conveyor status")
    return 0


def banner(text: str) -> None:
    print(f"\n{'=' * 78}\n{text}\n{'=' * 78}", flush=True)


def run(argv: list[str], cwd: Path, *, env: dict[str, str] | None = None, capture: bool = False) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def conveyor(repo: Path, *args: str, capture: bool = False) -> str:
    return run([PY, "-m", "conveyor", *args, "--repo", str(repo)], repo, capture=capture)


def make_repository(repo: Path) -> None:
    repo.mkdir(parents=True)
    run(["git", "init", "-q", "-b", "main"], repo)
    (repo / "README.md").write_text("# greeter\n\nA tiny project for the Conveyor demo.\n")
    identity = ["-c", "user.name=Conveyor Demo", "-c", "user.email=demo@localhost"]
    run(["git", "add", "README.md"], repo)
    run(["git", *identity, "commit", "-q", "-m", "Initial commit"], repo)


def logged_in() -> bool:
    if os.environ.get("CONVEYOR_DEMO_OFFLINE"):
        return False
    has_login = bool(os.environ.get("ANTHROPIC_API_KEY")) or (Path.home() / ".claude" / ".credentials.json").exists()
    return has_login and shutil.which("claude") is not None


def agent_environment(scratch: Path) -> tuple[dict[str, str], object]:
    """The daemon's environment and a function that stops the offline model (if one was started)."""
    env = dict(os.environ)
    if logged_in():
        banner("Using your claude login: a real model does this task (it costs real tokens)")
        return env, lambda: None
    from tests.support import agent_clis
    from tests.support.model_server import claude_env

    claude = agent_clis.install("claude-code", agent_clis.cache_root(os.environ))
    server = subprocess.Popen([PY, "-m", "tests.support.model_server", "--script", "demo"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert server.stdout is not None
    urls = json.loads(server.stdout.readline())
    home = scratch / "agent-home"
    home.mkdir(parents=True)
    env.update(claude_env(urls["anthropic_base_url"], home))
    env["CONVEYOR_DEMO_CLAUDE"] = str(claude)
    banner("OFFLINE DEMO — no claude login found, so no real AI model is involved.\n"
           f"The real claude CLI ({agent_clis.version_of(claude)}) runs unchanged, but it talks to\n"
           f"Conveyor's scripted demo model at {urls['anthropic_base_url']}, which always writes the same\n"
           "hello.py. Log in to claude (or set ANTHROPIC_API_KEY) to see a real model do the work.")

    def stop_model() -> None:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)

    return env, stop_model


def configure(repo: Path, env: dict[str, str]) -> None:
    daemon = repo / "config" / "daemon.yaml"
    daemon.write_text(daemon.read_text() + "\n# demo: look often, no remote to push to\nrescan_interval_s: 1\n"
                      "remote: {name: null}\n")
    claude = env.get("CONVEYOR_DEMO_CLAUDE")
    if claude:
        (repo / "config" / "tools.yaml").write_text(f"tools:\n  claude-code:\n    binary: {claude}\n")
    print(conveyor(repo, "config", "validate", capture=True).strip().splitlines()[-1])


def start_daemon(repo: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    daemon = subprocess.Popen([PY, "-m", "conveyor", "run", "--repo", str(repo), "--console-logs"], cwd=repo,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while b"daemon.ready" not in log_path.read_bytes():
        if daemon.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the daemon did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    print(f"daemon running (pid {daemon.pid})")
    return daemon


def wait_for_done(repo: Path, task_id: str, daemon: subprocess.Popen[bytes], timeout_s: float) -> Path:
    done_dir = repo / "work" / "collaboration" / "done"
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        found = next(done_dir.rglob(f"{task_id}.yaml"), None)
        if found is not None:
            print(f"task finished after {time.monotonic() - started:.1f} s")
            return found
        if daemon.poll() is not None:
            sys.exit("the daemon exited early; see the daemon log")
        time.sleep(0.2)
    sys.exit(f"the task did not finish within {timeout_s:.0f} s; see `conveyor status` and the daemon log")


def show_results(repo: Path, task_id: str, task_file: Path) -> None:
    branch = f"conveyor/{task_id}"
    banner("Board: conveyor status")
    conveyor(repo, "status")
    banner("Branch: git branch --list 'conveyor/*'")
    print(run(["git", "branch", "--list", "conveyor/*"], repo, capture=True).rstrip())
    if run(["git", "branch", "--list", branch], repo, capture=True).strip():
        banner(f"Commit: git show --stat {branch}")
        print(run(["git", "show", "--stat", "--format=fuller", branch], repo, capture=True).rstrip())
        banner(f"The agent's file on the branch: git show {branch}:hello.py")
        print(run(["git", "show", f"{branch}:hello.py"], repo, capture=True).rstrip())
    banner(f"Task file: {task_file.relative_to(repo)}")
    print(task_file.read_text().rstrip())
    banner("Telemetry row (.git/conveyor/telemetry.db, table invocations)")
    with sqlite3.connect(repo / ".git" / "conveyor" / "telemetry.db") as conn:
        conn.row_factory = sqlite3.Row
        for row in conn.execute("SELECT * FROM invocations WHERE task_id = ?", (task_id,)):
            for key in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
                if row[key] is not None:
                    print(f"  {key:<18} {row[key]}")
    banner("Spend: conveyor stats")
    conveyor(repo, "stats")


def stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    print(f"\ndaemon stopped (exit code {daemon.returncode})")


if __name__ == "__main__":
    sys.exit(main())
