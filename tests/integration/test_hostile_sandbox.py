"""Hostile cases 4, 7 and 9 of issue 14, run by a real daemon process with a real agent executable that tries
to leave its workspace (`tests/support/fake_agent.py`) inside the bubblewrap sandbox (`sandbox: bwrap`, so a
machine where bubblewrap cannot run fails these tests instead of skipping them).

Each test asserts that the user's checkout is byte-identical (HEAD, branch, index, `.git/config`, hooks and
every file but the board the daemon itself moves), that no process of the task is left, and that no process
the agent started had a variable outside its allowlist.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DAEMON_YAML, Repo, use_only
from tests.integration.daemon_process import DaemonProcess, running_daemon
from tests.integration.test_hostile_agents import processes_with
from tests.support.agent_script import step
from tests.support.waiting import wait_for

TOKEN = "ghp_conveyorSandboxTestToken0123456789ab"
ALLOWED = {"PATH", "HOME", "LANG", "FAKE_AGENT_OUT", "FAKE_AGENT_TOOL"}
MARK = "FAKE write agent-was-here.txt"          # every hostile task also does its job: one file


@pytest.fixture
def escape(repo: Repo, tmp_path: Path) -> Repo:
    use_only(repo, repo.agent_bin, "escape", env_allowlist=["PATH", "HOME", "LANG"], sandbox="bwrap")
    repo.write_config("daemon.yaml", DAEMON_YAML + "privacy: full\n")
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", "escape agent")
    return repo


@pytest.fixture
def daemon(escape: Repo) -> Iterator[DaemonProcess]:
    with running_daemon(escape.path, env={"GITHUB_TOKEN": TOKEN}) as process:
        process.wait_event("daemon.ready")
        yield process


def checkout_state(repo: Repo) -> dict[str, str]:
    """A digest of everything the user owns in the checkout; the board is the daemon's and is left out."""
    state = {"HEAD": repo.git("rev-parse", "HEAD"), "branch": repo.git("symbolic-ref", "HEAD"),
             "status": repo.git("status", "--porcelain", "--untracked-files=all", "--", ".",
                                ":(exclude)work/collaboration")}
    git_dir = repo.git_dir
    for path in [git_dir / "HEAD", git_dir / "config", git_dir / "index", *sorted((git_dir / "hooks").iterdir())]:
        state[str(path.relative_to(repo.path))] = _digest(path)
    for path in sorted(repo.path.rglob("*")):
        relative = path.relative_to(repo.path)
        if path.is_file() and relative.parts[0] != ".git" and relative.parts[:2] != ("work", "collaboration"):
            state[str(relative)] = _digest(path)
    return state


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(repo: Repo, task_id: str) -> dict[str, Any]:
    return repo.agent.last(task_id)


def assert_contained(repo: Repo, task_id: str, before: dict[str, str]) -> dict[str, Any]:
    """The task finished inside bwrap, the checkout is as it was, nothing of it runs, and its environment
    held only allowed names; returns what the agent recorded."""
    document = repo.done_doc(task_id)
    assert document["status"] == "done", document
    assert document["result"]["sandbox"] == "bwrap"
    assert document["result"]["artefacts"] == ["agent-was-here.txt"]
    assert checkout_state(repo) == before
    assert processes_with(f"--task {task_id}") == []
    assert processes_with(f"conveyor-grandchild-{task_id}") == []
    seen = record(repo, task_id)
    assert set(seen["env"]) <= ALLOWED, sorted(set(seen["env"]) - ALLOWED)
    assert TOKEN not in json.dumps(seen)
    return seen


def test_an_agent_cannot_edit_the_config_nor_signal_the_daemon(escape: Repo, daemon: DaemonProcess) -> None:
    """Case 4: it adds GITHUB_TOKEN to tools.yaml's allowlist and sends SIGHUP to its parent and to the
    daemon; the edit fails, the signals reach nobody, and the next agent does not get the token."""
    before = checkout_state(escape)
    tools_yaml = escape.path / "config" / "tools.yaml"
    allow_token = step("edit", path=str(tools_yaml), old="env_allowlist:\n", new="env_allowlist:\n- GITHUB_TOKEN\n")
    escape.submit("edits-config", description=f"{allow_token}\nFAKE signal parent HUP\nFAKE signal conveyor HUP\n"
                                              f"FAKE child-env\n{MARK}")
    wait_for(lambda: escape.done_path("edits-config").exists(), what="the hostile task to finish")
    seen = assert_contained(escape, "edits-config", before)
    outcomes = escape.agent.outcomes("edits-config")
    assert outcomes[f"edit {tools_yaml}"] != "ok"               # read-only (or not there at all)
    assert seen["ppid"] == 1                                    # its parent is the sandbox's own init
    assert outcomes["signal conveyor"] == "no process found"    # the daemon is not in its /proc
    child_env = json.loads((escape.out / "edits-config.child-env.json").read_text())
    assert set(child_env) <= ALLOWED
    escape.submit("next-agent", description=f"FAKE child-env\n{MARK}")
    wait_for(lambda: escape.done_path("next-agent").exists(), what="the next task to finish")
    assert_contained(escape, "next-agent", before)
    assert daemon.events("config.reloaded") == [] and daemon.events("config.reload_refused") == []
    assert daemon.alive()


def test_an_agent_cannot_plant_a_task_nor_write_beside_its_workspace(escape: Repo, daemon: DaemonProcess) -> None:
    """Case 7: it writes a task into the main checkout's inbox/ and a file into `../` of its workspace."""
    before = checkout_state(escape)
    plant = step("write", path=f"{escape.inbox}/planted-{{task}}.yaml",
                 text="id: planted-{task}\nagent: backend-dev\nstatus: new\ntitle: planted\n", parents=False)
    escape.submit("plants", description=f"{plant}\nFAKE write ../planted.txt\n"
                                        f"FAKE write {escape.path}/planted.txt\n{MARK}")
    wait_for(lambda: escape.done_path("plants").exists(), what="the hostile task to finish")
    assert_contained(escape, "plants", before)
    outcomes = escape.agent.outcomes("plants")
    assert outcomes[f"write {escape.inbox}/planted-plants.yaml"] != "ok" and outcomes["write ../planted.txt"] != "ok"
    # (writing into the checkout's own path may "succeed" in the agent's view: the test's checkout lies
    # under /tmp, which is a private, throw-away folder inside the sandbox; the host is what counts)
    assert not list(escape.board.rglob("planted-*"))
    assert not list(escape.worktrees_dir.glob("planted.txt")) and not (escape.path / "planted.txt").exists()
    assert daemon.events("task.started") and all(e.get("task_id") != "planted-plants"
                                                 for e in daemon.events("task.started"))
    assert daemon.alive()


def test_a_setsid_grandchild_is_gone_when_the_task_ends(escape: Repo, daemon: DaemonProcess) -> None:
    """Case 9: a grandchild in a session of its own has left the process group the daemon stops, but
    not the sandbox's PID namespace: it dies with the agent."""
    before = checkout_state(escape)
    escape.submit("setsid", description=f"FAKE spawn setsid 300\n{MARK}")
    wait_for(lambda: escape.done_path("setsid").exists(), what="the hostile task to finish")
    assert_contained(escape, "setsid", before)
    assert escape.agent.outcomes("setsid")["spawn"] == "ok"
    assert daemon.alive()


def test_sighup_still_reaches_the_daemon_from_outside(escape: Repo, daemon: DaemonProcess) -> None:
    """The control for case 4: the daemon does reload on a SIGHUP sent from outside the sandbox, so the
    silence above is the sandbox's doing."""
    daemon.signal(signal.SIGHUP)
    daemon.wait_event("config.reloaded")
