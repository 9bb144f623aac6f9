"""The daemon as a real process under a stand-in service manager: sd_notify over a real AF_UNIX datagram
socket, real signals (SIGTERM drains, a second one forces, SIGHUP reloads), one daemon per repository,
and JSON log lines that each name their task."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from conveyor.daemon.lock import holder_pid
from conveyor.telemetry.store import InvocationStart, Telemetry
from tests.integration.conftest import DAEMON_YAML, Repo, tools_yaml
from tests.integration.daemon_process import DaemonProcess, NotifySocket, running_daemon
from tests.support.waiting import wait_for


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


def assigned_doc(repo: Repo, task_id: str, agent: str = "backend-dev") -> dict[str, object]:
    document = yaml.safe_load((repo.board / "assigned" / agent / f"{task_id}.yaml").read_text())
    assert isinstance(document, dict)
    return document


def agent_processes(task_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "--task" in cmdline and task_id in cmdline:
            found.append(proc)
    return found


# ------------------------------------------------------------------ sd_notify
def test_ready_after_recovery_then_status_watchdog_and_stopping(repo: Repo, notify: NotifySocket) -> None:
    stale = Telemetry(repo.telemetry_db).start(InvocationStart("ghost", "backend-dev", "fake", None, 1, 1.0))
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"}
    with running_daemon(repo.path, env) as daemon:
        ready = notify.wait_for(lambda m: m.startswith("READY=1"))
        assert ready == "READY=1\nSTATUS=running 0, queued 0, paused 0"
        # READY=1 came after start-up recovery: the row a crash left "running" is already reconciled
        assert [row["outcome"] for row in repo.rows("ghost") if row["id"] == stale] == ["interrupted"]
        since = len(notify.received)

        def pings() -> list[str]:
            return [m for m in notify.collect()[since:] if m == "WATCHDOG=1"]

        wait_for(lambda: len(pings()) >= 2, what="two watchdog pings")   # every 0.2 s while the loop turns
        repo.submit("notified", description="FAKE sleep 1\nFAKE write a.txt x")
        notify.wait_for(lambda m: m == "STATUS=running 1, queued 0, paused 0")
        wait_for(lambda: repo.done_path("notified").exists(), what="the task to finish")
        notify.wait_for(lambda m: m == "STATUS=running 0, queued 0, paused 0", since=since + len(pings()))
        since = len(notify.received)
        assert daemon.stop() == 0
    assert "STOPPING=1" in notify.collect()[since:]


def test_the_watchdog_goes_silent_while_the_main_loop_is_stuck(repo: Repo, notify: NotifySocket,
                                                               tmp_path: Path) -> None:
    """A `git` on PATH that hangs while a marker exists: the main loop (which asks git whether the base branch
    is ready before claiming) stalls, the heartbeat thread keeps running, and the pings must stop."""
    marker = tmp_path / "hang-git"
    wrapper_dir = tmp_path / "git-wrapper"
    wrapper_dir.mkdir()
    real_git = subprocess.run(["which", "git"], capture_output=True, text=True, check=True).stdout.strip()
    (wrapper_dir / "git").write_text(f"#!/bin/sh\nwhile [ -e '{marker}' ]; do sleep 0.05; done\n"
                                     f"exec '{real_git}' \"$@\"\n")
    (wrapper_dir / "git").chmod(0o755)
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000",
           "PATH": f"{wrapper_dir}{os.pathsep}{os.environ['PATH']}"}
    with running_daemon(repo.path, env) as daemon:
        notify.wait_for(lambda m: m.startswith("READY=1"))
        notify.wait_for(lambda m: m == "WATCHDOG=1", since=len(notify.received))
        marker.touch()
        repo.submit("stalls-the-loop", description="FAKE write a.txt x")
        daemon.wait_event("watchdog.loop_stalled", timeout=30)
        notify.collect(0.3)
        since = len(notify.received)
        time.sleep(1.0)
        assert "WATCHDOG=1" not in notify.collect()[since:]     # silent: systemd would restart us
        marker.unlink()
        daemon.wait_event("watchdog.resumed", timeout=30)
        notify.wait_for(lambda m: m == "WATCHDOG=1", since=len(notify.received))
        wait_for(lambda: repo.done_path("stalls-the-loop").exists(), what="the task to finish")


def test_service_manager_variables_never_reach_an_agent(repo: Repo, notify: NotifySocket) -> None:
    """Even a tool whose allowlist is `*` never sees NOTIFY_SOCKET or WATCHDOG_*; others see only their list."""
    agent_bin = repo.path.parent / "bin" / "fake-agent"
    repo.write_config("tools.yaml", tools_yaml(agent_bin, repo.out) + (
        f"  fake-everything:\n    binary: {agent_bin}\n    argv: [--task, \"{{task_id}}\", \"{{prompt}}\"]\n"
        f"    env: {{FAKE_AGENT_OUT: \"{repo.out}\"}}\n    env_allowlist: [\"*\"]\n"
        f"    sandbox_writable: [\"{repo.out}\"]\n"))
    env = {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "",
           "LISTEN_FDS": "3", "INVOCATION_ID": "abc", "CONVEYOR_TEST_SECRET": "hunter2"}
    repo.submit("env-default", description="nothing")
    repo.submit("env-everything", description="nothing", tool="fake-everything")
    with running_daemon(repo.path, env) as daemon:
        wait_for(lambda: repo.done_path("env-default").exists() and repo.done_path("env-everything").exists())
        assert daemon.stop() == 0
    default = repo.agent.last("env-default")["env"]
    everything_env = repo.agent.last("env-everything")["env"]
    assert "CONVEYOR_TEST_SECRET" not in default
    assert set(default) <= {"PATH", "HOME", "LANG"} | {n for n in default if n.startswith("FAKE_")}
    assert everything_env["CONVEYOR_TEST_SECRET"] == "hunter2"  # the configuration asked for everything...
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "INVOCATION_ID"):
        assert name not in everything_env and name not in default   # ...but never the manager's variables


# ------------------------------------------------------------------ signals
def test_sigterm_lets_a_running_agent_finish_within_the_grace(repo: Repo, notify: NotifySocket) -> None:
    repo.submit("finish-me", description="FAKE sleep 1.5\nFAKE write a.txt x")
    with running_daemon(repo.path, {"NOTIFY_SOCKET": notify.address}) as daemon:
        wait_for(lambda: repo.agent_started("finish-me"), what="the agent to start")
        since = len(notify.collect())
        daemon.signal(signal.SIGTERM)
        daemon.wait_event("daemon.draining")
        repo.submit("not-claimed-while-draining", description="FAKE write b.txt x")
        assert daemon.wait(60) == 0
    messages = notify.collect()[since:]
    assert messages[0] == "STOPPING=1"
    extend = [int(m.split("=")[1]) for m in messages if m.startswith("EXTEND_TIMEOUT_USEC=")]
    # the drain asks for what is left of its grace (10 s) plus the kill grace and a margin, in microseconds
    assert extend and 10_000_000 < extend[0] <= (10 + 0.5 + 15) * 1_000_000
    assert repo.done_doc("finish-me")["status"] == "done"
    assert (repo.inbox / "not-claimed-while-draining.yaml").exists()       # stopped claiming
    assert repo.worktrees() == [str(repo.path)]
    assert holder_pid(repo.git_dir / "conveyor" / "daemon.lock") is None


def test_sigterm_stops_an_agent_after_the_grace_and_leaves_it_ready_to_resume(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("drain_grace_s: 10", "drain_grace_s: 0.5")
                      .replace("attempts: 1", "attempts: 2"))
    repo.submit("resume-me", description="FAKE sleep@1 60\nFAKE write a.txt x")
    with running_daemon(repo.path) as daemon:
        wait_for(lambda: repo.agent_started("resume-me"), what="the agent to start")
        daemon.signal(signal.SIGTERM)
        stopping = daemon.wait_event("daemon.stopping_agents")
        assert stopping["reason"] == "drain grace over" and stopping["running"] == ["resume-me"]
        assert daemon.wait(60) == 0
    document = assigned_doc(repo, "resume-me")
    assert (document["status"], document["attempt"]) == ("assigned", 0)    # ready, no attempt spent
    assert agent_processes("resume-me") == []
    assert repo.worktrees() == [str(repo.path)]
    repo.run_once()
    finished = repo.done_doc("resume-me")
    assert (finished["status"], finished["attempt"]) == ("done", 1)


def test_a_second_sigterm_stops_the_agents_at_once(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("drain_grace_s: 10", "drain_grace_s: 120"))
    repo.submit("force-me", description="FAKE sleep 120")
    with running_daemon(repo.path) as daemon:
        wait_for(lambda: repo.agent_started("force-me"), what="the agent to start")
        daemon.signal(signal.SIGTERM)
        daemon.wait_event("daemon.draining")
        assert daemon.alive()                                   # warm: it waits for the agent
        daemon.signal(signal.SIGTERM)
        stopping = daemon.wait_event("daemon.stopping_agents")
        assert stopping["reason"] == "second stop signal"
        assert daemon.wait(30) == 0
    document = assigned_doc(repo, "force-me")
    assert (document["status"], document["attempt"]) == ("assigned", 0)
    assert agent_processes("force-me") == []
    rows = repo.rows("force-me")
    assert len(rows) == 1 and rows[0]["outcome"] != "running"


def test_sighup_reloads_and_refuses_a_bad_configuration(repo: Repo, notify: NotifySocket) -> None:
    with running_daemon(repo.path, {"NOTIFY_SOCKET": notify.address}) as daemon:
        notify.wait_for(lambda m: m.startswith("READY=1"))
        repo.write_config("daemon.yaml", DAEMON_YAML.replace("max_parallel: 2", "max_parallel: 3"))
        since = len(notify.received)
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_event("config.reloaded")["max_parallel"] == 3
        notify.wait_for(lambda m: m.startswith("RELOADING=1\nMONOTONIC_USEC="), since=since)
        notify.wait_for(lambda m: m.startswith("READY=1"), since=since)
        repo.write_config("daemon.yaml", DAEMON_YAML + "max_paralel: 4\n")       # a typo
        daemon.signal(signal.SIGHUP)
        refused = daemon.wait_event("config.reload_refused")
        assert any("daemon.yaml" in problem and "max_paralel" in problem for problem in refused["problems"])
        assert "previous configuration stays in force" in refused["note"]
        repo.write_config("daemon.yaml", DAEMON_YAML.replace("board_dir", "# board_dir") + "board_dir: other\n")
        daemon.signal(signal.SIGHUP)
        restart = daemon.wait_event("config.reload_refused", after=1)
        assert restart["changed"] == ["board_dir"] and "restart the daemon" in restart["note"]
        repo.submit("after-reloads", description="FAKE write a.txt x")
        wait_for(lambda: repo.done_path("after-reloads").exists(), what="a task after the reloads")
        assert daemon.alive()


def test_one_daemon_per_repository_the_second_names_the_first(repo: Repo) -> None:
    with running_daemon(repo.path) as first:
        first.wait_event("daemon.ready")
        second = subprocess.run([sys.executable, "-m", "conveyor", "run", "--repo", str(repo.path)],
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr and "already serves this repository" in second.stderr
        assert first.alive()
    assert holder_pid(repo.git_dir / "conveyor" / "daemon.lock") is None


# ------------------------------------------------------------------ logs
def test_every_log_line_about_a_task_names_it(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 2"))
    ids = ["log-ok", "log-fails", "log-retried", "log-json"]
    repo.submit("log-ok", description="FAKE write a.txt x")
    repo.submit("log-fails", description="FAKE exit 3")
    repo.submit("log-retried", description="FAKE exit@1 9\nFAKE write b.txt y")
    repo.submit("log-json", agent="json-agent", description="FAKE write c.txt z")
    repo.drop("log-rejected.yaml", "id: log-rejected\nagent: [\n")
    with running_daemon(repo.path) as daemon:
        wait_for(lambda: all(repo.done_path(i).exists() or repo.done_path(i, "json-agent").exists() for i in ids),
                 what="all tasks to finish")
        wait_for(lambda: (repo.rejected / "log-rejected.yaml").exists())
        assert daemon.stop() == 0
    events = daemon.events()
    assert events and all("timestamp" in e and "level" in e for e in events)
    processes = [e for e in events if e["event"] in ("process_started", "process_exited")]
    assert len(processes) >= 2 * (len(ids) + 1)                 # one retry
    missing = [e for e in events if any(i in json.dumps(e) for i in [*ids, "log-rejected"]) and "task_id" not in e]
    assert missing == []
    assert all("task_id" in e for e in processes)
    assert {e["task_id"] for e in processes} == set(ids)


def test_no_telemetry_row_is_left_running_by_a_clean_stop(repo: Repo) -> None:
    repo.submit("clean", description="FAKE sleep 30")
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("drain_grace_s: 10", "drain_grace_s: 0"))
    daemon = DaemonProcess(repo.path).start()
    wait_for(lambda: repo.agent_started("clean"), what="the agent to start")
    assert daemon.stop() == 0
    conn = sqlite3.connect(repo.telemetry_db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM invocations WHERE outcome='running'").fetchone() == (0,)
    finally:
        conn.close()
