"""The PR watcher's cost (issue 13): N open pull requests on a FakeGitHub (127.0.0.1), one pass cold, idle
passes with the ETags it keeps, and the same idle pass with its ETags forgotten (what polling without
conditional requests costs). Rate limit = the requests GitHub counts (every answer but a 304)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from conveyor.board.layout import BoardLayout
from conveyor.config import load_config
from conveyor.pipeline.pr_watch import PullWatcher
from conveyor.setup.init_repo import init_repository
from conveyor.telemetry.store import Telemetry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.fake_github import FakeGitHub  # test tooling, from the source tree

TOKEN_ENV, TOKEN, REPO = "BENCH_GH_TOKEN", "bench-token", "octo/widgets"


def _repo(root: Path, api_url: str, pulls: int) -> Path:
    path = root / "pr-watch-repo"
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    init_repository(path)
    daemon = path / "config" / "daemon.yaml"
    settings = yaml.safe_load(daemon.read_text(encoding="utf-8")) or {}
    settings.update({"remote": {"name": None}, "follow_up": {"enabled": True, "permitted": ["alice"]},
                     "pull_requests": {"enabled": True, "api_url": api_url, "repo": REPO, "token_env": TOKEN_ENV}})
    daemon.write_text(yaml.safe_dump(settings), encoding="utf-8")
    done = path / "work" / "collaboration" / "done" / "dev"
    done.mkdir(parents=True)
    for n in range(1, pulls + 1):
        document = {"id": f"t-{n}", "agent": "dev", "status": "done", "title": f"task {n}", "artefacts": [],
                    "result": {"branch": f"conveyor/t-{n}", "pr_url": f"{api_url}/{REPO}/pull/{n}"}}
        (done / f"t-{n}.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _pass(watcher: PullWatcher, github: FakeGitHub) -> dict[str, float]:
    asked, used = len(github.requests), github.rate_used
    started = time.perf_counter()
    watcher.run()
    return {"s": time.perf_counter() - started, "requests": len(github.requests) - asked,
            "rate_limit_cost": github.rate_used - used}


def bench_pr_watch(root: Path, pulls: int, idle_passes: int) -> dict[str, Any]:
    with FakeGitHub(token=TOKEN, repos=(REPO,)) as github:
        for n in range(1, pulls + 1):
            github.open_pull(REPO, f"conveyor/t-{n}")
            if n % 10 == 0:
                github.threads.comment(n, "mallory", "not permitted")       # some conversation to read
        repo = _repo(root, github.api_url, pulls)
        config = load_config(repo, repo / ".git")
        watcher = PullWatcher(lambda: config, {TOKEN_ENV: TOKEN}, BoardLayout(config.board_root),
                              Telemetry(config.telemetry_db), time.time)
        cold = _pass(watcher, github)
        idle = [_pass(watcher, github) for _ in range(idle_passes)]
        watcher.state._connect().execute("DELETE FROM etags")                 # polling without conditional requests
        watcher.state.close()
        forgetful = _pass(watcher, github)
    return {"pulls": pulls, "cold_pass": cold,
            "idle_pass_s_median": round(statistics.median(p["s"] for p in idle), 4),
            "idle_pass_requests": idle[-1]["requests"], "idle_pass_rate_limit_cost": idle[-1]["rate_limit_cost"],
            "idle_pass_without_etags": forgetful,
            "note": "an idle pass with ETags costs no rate limit (every answer 304); without them every request counts"}


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(bench_pr_watch(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 100, 3), indent=2))
