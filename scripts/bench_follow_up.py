"""What a follow-up on an open pull request costs besides its agent (issue 13): one task opens PR #1 on a
FakeGitHub (127.0.0.1) with a real bare `origin`, then N follow-ups run one after another, each a person's
comment answered by one commit on the same branch. For each run: wall time from the daemon's start to the
finished file, the agent's own time (telemetry), the rest (the daemon's part: fetch, workspace, gate,
commit, push, answer), and the GitHub requests it made and how many count against the rate limit.
The same is measured for the task that opened the PR, for comparison."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.gate_support import GH_REPO, Project, fake_github, make_project  # test tooling
from tests.support.agent_script import work

ORIGINAL = "bench-1"


def _one(project: Project, task_id: str) -> dict[str, float]:
    assert project.github is not None
    asked, used = len(project.github.requests), project.github.rate_used
    started = time.perf_counter()
    project.run()
    wall = time.perf_counter() - started
    document = yaml.safe_load(project.repo.done_path(task_id).read_text(encoding="utf-8"))
    assert document["status"] == "done", document.get("error")
    agent = sum(float(row["duration_s"] or 0.0) for row in project.repo.rows(task_id))
    return {"wall_s": wall, "agent_s": agent, "daemon_s": wall - agent,
            "requests": len(project.github.requests) - asked, "rate_limit_cost": project.github.rate_used - used}


def _follow_up(project: Project, n: int) -> str:
    assert project.github is not None and project.origin is not None
    comment = project.github.threads.comment(1, "alice", f"Change {n}, please.")
    task_id = f"{ORIGINAL}.fu-c{comment.id}"
    head = project.repo.git("--git-dir", str(project.origin), "rev-parse", f"refs/heads/conveyor/{ORIGINAL}")
    document = {"id": task_id, "agent": "backend-dev", "title": "Follow-up", "artefacts": [], "follow_up": {
        "of": ORIGINAL, "pr": 1, "branch": f"conveyor/{ORIGINAL}", "head_sha": head, "trigger": "comment",
        "event_id": f"c{comment.id}", "author": "alice", "reply_to": {"kind": "issue_comment", "id": comment.id},
        "request": f"Change {n}, please."}}
    project.script(task_id, work({"app.py": f"VALUE = {n}\n"}, f"VALUE is {n} now"))
    project.repo.drop(f"{task_id}.yaml", yaml.safe_dump(document, sort_keys=False))
    return task_id


def _summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 4) for key in runs[0]}


def bench_follow_up(root: Path, follow_ups: int) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    with fake_github(root) as github:
        project = make_project(root, with_remote=True, github=github)
        project.script(ORIGINAL, work({"app.py": "VALUE = 0\n"}, "added"))
        project.repo.submit(ORIGINAL, description="Add app.py.", title="Add app")
        opened = _one(project, ORIGINAL)
        runs = [_one(project, _follow_up(project, n)) for n in range(1, follow_ups + 1)]
        assert len(github.pulls(GH_REPO)) == 1
        answers = [c for c in github.threads.comments(1) if "conveyor-follow-up:" in c.body]
        assert len(answers) == follow_ups
    return {"follow_ups": follow_ups, "opening_task": {k: round(v, 4) for k, v in opened.items()},
            "follow_up_median": _summary(runs), "follow_up_max_wall_s": round(max(r["wall_s"] for r in runs), 4),
            "answers": len(answers), "pull_requests": 1}
