"""Agents orphaned by a killed daemon: recorded while they run, stopped by the next daemon's recovery, and
never a process that merely reuses a recorded pid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conveyor.runner.pids import AgentRecords, process_start_time
from tests.integration.conftest import DAEMON_YAML, Repo, tools_yaml
from tests.integration.daemon_process import DaemonProcess
from tests.integration.test_hostile_agents import processes_with
from tests.support.waiting import wait_for

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="start times come from /proc")


def sleeper() -> subprocess.Popen[bytes]:
    """A stand-in agent: its own session and group, as the runner starts agents."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@linux_only
def test_a_recorded_agent_still_running_is_stopped_with_its_group(tmp_path: Path) -> None:
    agent = sleeper()
    records = AgentRecords(tmp_path / "agents")
    records.add("task-a", agent.pid)
    assert records.stop_orphans(grace_s=2) == ["task-a"]
    assert agent.wait(10) is not None
    assert list((tmp_path / "agents").iterdir()) == []


@linux_only
def test_a_pid_reused_by_another_process_is_left_alone(tmp_path: Path) -> None:
    other = sleeper()
    try:
        folder = tmp_path / "agents"
        folder.mkdir()
        (folder / "task-b.pid").write_text(f"{other.pid} {int(process_start_time(other.pid) or 0) - 1}\n")
        assert AgentRecords(folder).stop_orphans(grace_s=1) == []
        assert running(other.pid)
        assert not (folder / "task-b.pid").exists()
    finally:
        other.kill()
        other.wait()


def test_records_of_agents_that_ended_are_just_dropped(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    records = AgentRecords(tmp_path / "agents")
    records.add("task-c", int(done.stdout))
    (tmp_path / "agents" / "garbled.pid").write_text("not a pid\n")
    assert records.stop_orphans(grace_s=1) == []
    assert list((tmp_path / "agents").iterdir()) == []


@linux_only
def test_an_agent_orphaned_by_a_killed_daemon_is_stopped_before_its_task_runs_again(repo: Repo) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("attempts: 1", "attempts: 2"))
    # uncontained: a sandboxed agent dies with the daemon (bwrap --die-with-parent), so there is no orphan;
    # recovery still matters where there is no sandbox (sandbox: none, macOS)
    repo.write_config("tools.yaml", tools_yaml(repo.agent_bin, repo.out,
                                               sandbox="none"))
    repo.submit("orphaned", description="FAKE sleep@1 120\nFAKE write a.txt x")
    first = DaemonProcess(repo.path).start()
    wait_for(lambda: repo.agent_started("orphaned"), what="the agent to start")
    agents = [p for p in psutil.process_iter(["cmdline"]) if "orphaned" in (p.info["cmdline"] or [])]
    assert len(agents) == 1
    first.kill_group()
    assert running(agents[0].pid)                        # the daemon died; its agent did not
    second = DaemonProcess(repo.path).start()
    try:
        stopped = second.wait_event("recovery.orphan_agent_stopped")
        assert (stopped["task_id"], stopped["pid"]) == ("orphaned", agents[0].pid)
        assert not running(agents[0].pid)
        wait_for(lambda: repo.done_path("orphaned").exists(), what="the task to run again")
    finally:
        assert second.stop() == 0
    document = repo.done_doc("orphaned")
    # issue 15: the daemon's death spends no attempt (this used to finish as attempt 2)
    assert (document["status"], document["attempt"], document["interruptions"]) == ("done", 1, 1)
    assert not (repo.git_dir / "conveyor" / "agents").exists() or \
        list((repo.git_dir / "conveyor" / "agents").iterdir()) == []


def test_a_sandboxed_agent_dies_with_a_killed_daemon(repo: Repo) -> None:
    """In bubblewrap (`--die-with-parent`) the agent and all it started go when the daemon is killed."""
    repo.submit("dies-with-daemon", description="FAKE sleep@1 120\nFAKE write a.txt x")
    first = DaemonProcess(repo.path).start()
    wait_for(lambda: repo.agent_started("dies-with-daemon"), what="the agent to start")
    assert processes_with("dies-with-daemon")
    first.kill_group()
    wait_for(lambda: processes_with("dies-with-daemon") == [], timeout=10, what="the sandboxed agent to die")
