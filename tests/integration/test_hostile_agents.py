"""Agents that misbehave, run by a real daemon process: one that hangs without a word, one that leaves
grandchildren behind, one that prints a gigabyte. The daemon stays up, nothing is lost, no process stays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.integration.conftest import DAEMON_YAML, Repo, use_only
from tests.integration.daemon_process import DaemonProcess, running_daemon
from tests.support.waiting import wait_for


@pytest.fixture
def sandbox() -> str:
    return "auto"


@pytest.fixture
def hostile(repo: Repo, sandbox: str) -> Repo:
    use_only(repo, repo.agent_bin, "hostile", sandbox=sandbox)
    repo.write_config("daemon.yaml", DAEMON_YAML.replace("idle_timeout_s: 60", "idle_timeout_s: 1.5")
                      + "privacy: full\nlog_cap_bytes: 1048576\n")
    return repo


@pytest.fixture
def daemon(hostile: Repo) -> Iterator[DaemonProcess]:
    with running_daemon(hostile.path) as process:
        process.wait_event("daemon.ready")
        yield process


def processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if marker in " ".join(proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_an_agent_that_hangs_silently_is_stopped_by_the_idle_timeout(hostile: Repo, daemon: DaemonProcess) -> None:
    hostile.submit("hangs", description="FAKE sleep 300")
    hostile.submit("after-the-hang", description="FAKE write a.txt")
    wait_for(lambda: hostile.done_path("hangs").exists() and hostile.done_path("after-the-hang").exists(),
             what="both tasks to finish")
    document = hostile.done_doc("hangs")
    assert document["status"] == "error" and document["error"]["kind"] == "timeout"
    assert "printed nothing" in document["error"]["message"]
    assert processes_with("--task hangs") == []
    assert hostile.done_doc("after-the-hang")["status"] == "done"
    assert daemon.alive()


@pytest.mark.parametrize("sandbox", ["none"])   # the process-group clean-up, where no sandbox's PID namespace does it
def test_grandchildren_left_behind_by_an_agent_are_stopped(hostile: Repo, daemon: DaemonProcess) -> None:
    hostile.submit("forks", description="FAKE spawn child 300\nFAKE spawn double-fork 300\nFAKE write a.txt")
    wait_for(lambda: hostile.done_path("forks").exists(), what="the task to finish")
    document = hostile.done_doc("forks")
    assert document["status"] == "done" and document["result"]["artefacts"] == ["a.txt"]
    wait_for(lambda: processes_with("conveyor-grandchild-forks") == [], timeout=10, what="no grandchild left")
    assert daemon.alive()
    assert any(e.get("task_id") == "forks" for e in daemon.events("process_group_survivors"))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_an_agent_printing_a_gigabyte_keeps_the_log_capped_and_the_daemon_flat(hostile: Repo,
                                                                              daemon: DaemonProcess) -> None:
    hostile.submit("loud", description=f"FAKE emit {1 << 30}\nFAKE write a.txt")
    me = psutil.Process(daemon.pid)
    baseline = me.memory_info().rss
    peak = [baseline]
    biggest_log = [0]
    finished = threading.Event()

    def sample() -> None:
        while not finished.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            logs = list((hostile.git_dir / "conveyor" / "logs" / "loud").glob("*.log"))
            biggest_log[0] = max([biggest_log[0], *(p.stat().st_size for p in logs if p.exists())])
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        wait_for(lambda: hostile.done_path("loud").exists(), timeout=500, what="the loud task to finish")
    finally:
        finished.set()
        sampler.join()
    assert hostile.done_doc("loud")["status"] == "done"
    exited = daemon.wait_event("process_exited", lambda e: e.get("task_id") == "loud")
    assert exited["output_bytes"] >= 1 << 30                          # the whole gigabyte went through
    assert biggest_log[0] <= (1 << 20) + 4096                       # the cap, plus its one closing line
    assert peak[0] - baseline < 100 * (1 << 20), (baseline, peak[0])   # a gigabyte went through, not into RAM
    assert daemon.alive()
