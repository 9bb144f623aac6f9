"""The PR watcher inside the real daemon: a real `conveyor run` process polls FakeGitHub (127.0.0.1) through the
daemon's periodic job; merged → `merged_at` and the ROADMAP.md item Completed, across a SIGKILL and restart;
merged and closed pull requests of reviewed tasks count in `conveyor stats` per author and per reviewer."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from conveyor.roadmap.parse import parse_roadmap
from tests.integration.conftest import ConveyorCli
from tests.integration.daemon_process import running_daemon
from tests.integration.gate_support import TOKEN, TOKEN_ENV, make_project, tools_yaml
from tests.integration.pr_watch_support import ROADMAP_TASK, TASK, WORK, Clock, configure, opened, outcomes, watcher
from tests.support.agent_script import work
from tests.support.fake_github import FakeGitHub
from tests.support.waiting import wait_for


def roadmap_status(path: Path) -> str:
    return parse_roadmap(path.read_text(encoding="utf-8")).item("1").status_text


def test_the_daemon_records_a_merge_and_completes_the_roadmap_item_across_a_kill(tmp_path: Path,
                                                                                github: FakeGitHub) -> None:
    project = opened(tmp_path, github, roadmap=True, poll_interval_s=0.5)
    roadmap = project.repo.path / "ROADMAP.md"
    assert roadmap_status(roadmap) == f"👀 In Review ({github.web_url}/octo/widgets/pull/1)"
    env = {TOKEN_ENV: TOKEN}
    with running_daemon(project.repo.path, env) as first:
        first.wait_event("pr_watch.passed", lambda e: e["polled"] == 1)      # polled while open: nothing to do
        first.kill_group()                                                   # killed in the middle
    github.merge(1)
    with running_daemon(project.repo.path, env) as second:
        decided = second.wait_event("pr_watch.decided")
        assert (decided["task_id"], decided["state"], decided["pr"]) == (ROADMAP_TASK, "merged", 1)
        wait_for(lambda: roadmap_status(roadmap) == "✅ Completed", what="the roadmap item to be Completed",
                 timeout=30)
        assert second.stop() == 0
    result = project.repo.done_doc(ROADMAP_TASK)["result"]
    assert result["merged_at"] == github.pull(1).merged_at and result["pr_state"] == "merged"
    assert len(second.events("pr_watch.decided")) == 1
    assert not [r for r in github.requests if r.path.endswith("/pulls/1") and r.method != "GET"]
    assert all(TOKEN not in line for line in first.lines + second.lines)   # the token never reaches a log


def test_complete_on_merge_false_leaves_the_item_to_a_person(tmp_path: Path, github: FakeGitHub) -> None:
    project = opened(tmp_path, github, roadmap=True, complete_on_merge=False)
    roadmap = project.repo.path / "ROADMAP.md"
    github.merge(1)
    watch = watcher(project, Clock())
    assert watch.run().merged == [1]
    watch.close()
    run = project.run()                                 # the daemon's merge check runs at start
    assert run.code == 0
    assert roadmap_status(roadmap).startswith("👀 In Review")
    assert project.repo.done_doc(ROADMAP_TASK)["result"]["pr_state"] == "merged"


VERDICT = '```json\n{"verdict": "approve", "summary": "fine", "findings": []}\n```'


def test_merged_and_closed_count_in_stats_per_author_and_per_reviewer(tmp_path: Path, github: FakeGitHub,
                                                                      conveyor_cli: ConveyorCli) -> None:
    project = make_project(tmp_path, with_remote=True, github=github)
    review_argv = '    review_argv: [--output, claude-json, --task, "{task_id}", "{prompt}"]\n'   # it reviews too
    text = tools_yaml(project.repo.agent_bin, project.repo.out, project.scripts).replace(
        "    parser: claude-json\n", "    parser: claude-json\n" + review_argv, 1)
    project.repo.write_config("tools.yaml", text)
    configure(project)
    config = project.repo.path / "config" / "daemon.yaml"
    config.write_text(config.read_text(encoding="utf-8") + "review: {enabled: true, tool: scripted}\n",
                      encoding="utf-8")
    for task_id in ("t-a", "t-b"):
        project.script(task_id, WORK, work({}, VERDICT))
        project.repo.submit(task_id, description=f"Add main for {task_id}.")
    assert project.run().code == 0
    numbers = {pull.head: pull.number for pull in github.pulls("octo/widgets")}
    assert set(numbers) == {"conveyor/t-a", "conveyor/t-b"}
    assert project.repo.done_doc("t-a")["result"]["review"]["verdict"] == "approve"
    github.merge(numbers["conveyor/t-a"])
    github.close(numbers["conveyor/t-b"])
    watch = watcher(project, Clock())
    report = watch.run()
    watch.close()
    assert sorted(report.merged + report.rejected) == sorted(numbers.values())

    shown = conveyor_cli("stats", "--format", "json", cwd=project.repo.path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    for group in ("review_by_author", "review_by_reviewer"):
        (row,) = data[group]
        assert (row["key"], row["tasks"], row["merged"], row["closed"], row["acceptance_rate"]) == (
            "scripted", 2, 1, 1, 0.5), group
    (agent,) = data["agent"]
    assert (agent["merged"], agent["closed"], agent["acceptance_rate"]) == (1, 1, 0.5)
    conn = sqlite3.connect(project.repo.telemetry_db)
    try:
        states = dict(conn.execute("SELECT task_id, state FROM pull_requests").fetchall())
    finally:
        conn.close()
    assert states == {"t-a": "merged", "t-b": "closed"}


def test_a_comment_goes_round_once_watcher_runner_answer_and_the_answer_starts_nothing(
        tmp_path: Path, github: FakeGitHub) -> None:
    github.threads.set_permission("alice", "write")
    project = opened(tmp_path, github)
    said = github.threads.comment(1, "alice", "Please make main() return 2.")
    task_id = f"{TASK}.fu-c{said.id}"
    project.script(task_id, work({"app.py": "def main():\n    return 2\n"}, "main() returns 2."))
    first = watcher(project, Clock())
    assert first.run().tasks == [task_id]
    first.close()

    assert project.run().code == 0                     # the real daemon runs it (and its own watcher pass)
    document = project.repo.done_doc(task_id)
    assert document["status"] == "done", document.get("error")
    answers = [c for c in github.threads.comments(1, kind="issue") if c.login == github.login]
    assert len(answers) == 1 and github.pull(1).head_sha == document["result"]["commit"]

    again = watcher(project, Clock())                  # the answer is the daemon's own: it asks for nothing
    report = again.run()
    assert report.tasks == [] and report.ignored == []
    assert outcomes(again) == {f"c{said.id}": "task", f"c{answers[0].id}": "own"}
    github.merge(1)
    assert again.run().merged == [1]
    assert "merged_at" in project.repo.done_doc(TASK)["result"]
    assert "merged_at" not in project.repo.done_doc(task_id)["result"]     # the PR is the original task's
    again.close()
