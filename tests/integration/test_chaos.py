"""Chaos: the daemon as a real process, SIGKILLed at random moments and restarted, must neither lose nor
double a task.

Each kill takes the daemon's whole process group (the daemon and any git command it is running, as a
service manager's SIGKILL would); agents run in sessions of their own and are left orphaned, as they would
be after a crash outside a cgroup. The RNG is seeded; the seed is printed so a failure can be replayed with
CONVEYOR_CHAOS_SEED=<seed>.
"""

from __future__ import annotations

import os
import random
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conveyor.daemon.lock import holder_pid
from tests.conftest import git
from tests.integration.conftest import Repo, make_repo
from tests.integration.daemon_process import DaemonProcess
from tests.support.fake_github import FakeGitHub
from tests.support.waiting import wait_for

TASKS = 30
KILLS = 6
GH_REPO = "octo/chaos"
TOKEN_ENV = "CONVEYOR_CHAOS_GH_TOKEN"
TOKEN = "ghs_chaosTestToken0123456789abcdefXYZ"


def chaos_daemon_yaml(api_url: str) -> str:
    return textwrap.dedent(f"""\
        base_branch: main
        max_parallel: 4
        rescan_interval_s: 1
        task_timeout_s: 60
        idle_timeout_s: 60
        kill_grace_s: 0.5
        attempts: 50
        interruptions: 50          # six kills at random moments may all land on one task: that is no loop
        drain_grace_s: 10
        remote: {{name: origin, push: true}}
        pull_requests: {{enabled: true, api_url: "{api_url}", repo: {GH_REPO}, token_env: {TOKEN_ENV}}}
        roadmap: {{enabled: false}}
        """)


def seed() -> int:
    value = int(os.environ.get("CONVEYOR_CHAOS_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"chaos seed: {value} (replay with CONVEYOR_CHAOS_SEED={value})")
    return value


def board_files(repo: Repo) -> Counter[str]:
    """How many files on the whole board (every folder) carry each task file name."""
    return Counter(path.name for path in repo.board.rglob("*.yaml") if not path.name.endswith(".error.yaml"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(seed())
    repo = make_repo(tmp_path)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    repo.git("remote", "add", "origin", str(origin))
    repo.git("push", "-q", "origin", "main")
    ids = [f"chaos-{index:02d}" for index in range(TASKS)]
    first_wave, second_wave = ids[: TASKS * 2 // 3], ids[TASKS * 2 // 3:]

    def drop(task_ids: list[str]) -> None:
        for task_id in task_ids:
            duration = round(rng.uniform(0.05, 1.5), 2)
            repo.submit(task_id, description=f"FAKE sleep {duration}\nFAKE write chaos/{task_id}.txt {task_id}")

    with FakeGitHub(token=TOKEN, repos=(GH_REPO,), remotes={GH_REPO: origin}) as github:
        repo.write_config("daemon.yaml", chaos_daemon_yaml(github.api_url))
        repo.git("commit", "-q", "-am", "chaos configuration")
        env = {TOKEN_ENV: TOKEN}
        drop(first_wave)
        for kill in range(KILLS):
            daemon = DaemonProcess(repo.path, env).start()
            daemon.wait_event("daemon.ready", timeout=60)
            time.sleep(rng.uniform(0.2, 2.0))
            daemon.kill_group()
            print(f"kill {kill + 1}: {len(list(repo.board.glob('done/backend-dev/*.yaml')))} done")
            if kill == 1:
                drop(second_wave)
        final = DaemonProcess(repo.path, env).start()
        try:
            wait_for(lambda: all(repo.done_path(i).exists() for i in ids), timeout=120,
                     what="every task to reach done/")
        finally:
            assert final.stop(60) == 0, final.tail()
        check_board(repo, ids)
        commits = check_commits(repo, ids)
        check_pull_requests(repo, ids, github, commits)
        check_nothing_left_behind(repo)
        check_telemetry(repo, ids, commits)


def check_board(repo: Repo, ids: list[str]) -> None:
    counts = board_files(repo)
    assert {name: n for name, n in counts.items() if n != 1} == {}             # nothing twice, anywhere
    assert sorted(counts) == sorted(f"{i}.yaml" for i in ids)                # nothing else (no rejects)
    for task_id in ids:
        document = repo.done_doc(task_id)
        assert document["status"] == "done", document
    assert sorted(p.name for p in repo.inbox.iterdir()) == [".gitkeep"]
    assert [p for p in (repo.board / "assigned").rglob("*") if p.is_file() and p.name != ".gitkeep"] == []


def check_commits(repo: Repo, ids: list[str]) -> dict[str, str]:
    """Exactly one commit per task branch, carrying its trailer and its file; returns id → sha."""
    commits = {}
    for task_id in ids:
        log = repo.git("log", "--format=%H%x00%(trailers:key=Conveyor-Task,valueonly)%x1e",
                       f"main..conveyor/{task_id}")
        records = [r.strip().split("\0") for r in log.split("\x1e") if r.strip()]
        assert len(records) == 1, (task_id, records)
        sha, trailer = records[0]
        assert trailer.strip() == task_id
        assert repo.done_doc(task_id)["result"]["commit"] == sha
        assert repo.git("show", f"{sha}:chaos/{task_id}.txt") == task_id
        assert repo.git("diff-tree", "--no-commit-id", "--name-only", "-r", sha) == f"chaos/{task_id}.txt"
        commits[task_id] = sha
    return commits


def check_pull_requests(repo: Repo, ids: list[str], github: FakeGitHub, commits: dict[str, str]) -> None:
    heads = Counter(pull.head for pull in github.pulls(GH_REPO))
    assert {head: n for head, n in heads.items() if n > 1} == {}               # never a duplicate pull request
    with_pr = [i for i in ids if repo.done_doc(i)["result"].get("pr_url")]
    print(f"pull requests: {len(with_pr)} of {len(ids)} tasks have a pr_url")
    for task_id in with_pr:
        pulls = github.pulls_for(GH_REPO, f"conveyor/{task_id}")
        assert len(pulls) == 1
        assert repo.done_doc(task_id)["result"]["pr_url"].endswith(f"/pull/{pulls[0].number}")
        assert git(repo.path.parent / "origin.git", "rev-parse", f"conveyor/{task_id}") == commits[task_id]


def check_nothing_left_behind(repo: Repo) -> None:
    assert repo.worktrees() == [str(repo.path)]
    worktrees_dir = repo.config().worktrees_dir
    assert not worktrees_dir.exists() or list(worktrees_dir.iterdir()) == []
    assert holder_pid(repo.git_dir / "conveyor" / "daemon.lock") is None
    assert [p for p in (repo.git_dir / "refs").rglob("*.lock")] == []
    assert not (repo.git_dir / "index.lock").exists()
    assert repo.git("status", "--porcelain", "--untracked-files=no") == ""


def check_telemetry(repo: Repo, ids: list[str], commits: dict[str, str]) -> None:
    rows = repo.rows()
    assert [r for r in rows if r["outcome"] == "running"] == []
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row)
    assert sorted(by_task) == sorted(ids)
    interrupted = 0
    for task_id in ids:
        task_rows = by_task[task_id]
        attempts = [row["attempt"] for row in task_rows]
        # A daemon killed under a run spends no attempt (its interruption has its own count), so an attempt
        # may have several rows; exactly one of them made the task's commit: nothing was committed twice.
        final_attempt = repo.done_doc(task_id)["attempt"]
        assert max(attempts) == final_attempt
        committed = [row for row in task_rows if row["commit_sha"]]
        assert len(committed) == 1, task_rows
        final = committed[0]
        assert (final["attempt"], final["outcome"], final["commit_sha"]) == (final_attempt, "ok", commits[task_id])
        others = {row["outcome"] for row in task_rows if row is not final}
        assert others <= {"interrupted", "ok"}, task_rows                  # ok: killed after the agent ended
        interrupted += sum(1 for row in task_rows if row["outcome"] == "interrupted")
    print(f"telemetry: {len(rows)} rows for {len(ids)} tasks, {interrupted} interrupted")
