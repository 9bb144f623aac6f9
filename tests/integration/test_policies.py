"""Routing, provider limits, budgets, pacing and privacy, each shown through the real daemon and runner with
the fake agent CLI (tests/support/fake_agent.py) under several tool names: it obeys `FAKE [tool:]step` lines
in its prompt and logs every start and end with a timestamp (so concurrency can be measured, not assumed).
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from structlog.testing import capture_logs

from conveyor.cli.logs_cmd import command as logs_command
from conveyor.cli.status_cmd import command as status_command
from conveyor.config import Config
from conveyor.core.state_files import STATUS_FILE
from conveyor.core.timeutil import parse_iso
from conveyor.daemon.loop import Daemon
from conveyor.daemon.status import collect_status
from conveyor.runner.types import Outcome
from conveyor.scheduling.tool_health import PAUSES_FILE, ToolHealth
from conveyor.telemetry.store import InvocationEnd, InvocationStart, Telemetry
from tests.integration.conftest import Repo, make_repo
from tests.support.agent_script import AgentRecords, step, tool_entry
from tests.support.clock import TestClock
from tests.support.waiting import wait_for

DAEMON = """\
base_branch: main
max_parallel: {max_parallel}
rescan_interval_s: 0.2
task_timeout_s: 60
idle_timeout_s: 60
kill_grace_s: 0.5
attempts: 1
drain_grace_s: 10
privacy: {privacy}
remote: {{name: null, push: false}}
pull_requests: {{enabled: false}}
roadmap: {{enabled: false}}
"""


class Board:
    """A repository after `conveyor init` whose tools are all the scripted agent (under different names)."""

    def __init__(self, repo: Repo, binary: Path, out: Path) -> None:
        self.repo, self.binary, self.out = repo, binary, out

    def configure(self, *, agents: dict[str, Any], tools: dict[str, dict[str, Any]] | None = None,
                  policies: dict[str, Any] | None = None, max_parallel: int = 2, privacy: str = "metadata") -> None:
        names = {"plain": {}, "limited": {}, "slow": {}, **(tools or {})}
        entries = {name: tool_entry(Path(extra.pop("binary", self.binary)), self.out, tool=name, **extra)
                   for name, extra in names.items()}
        entries["ghost"] = {"binary": "conveyor-test-no-such-agent-cli", "argv": ["{prompt}"]}
        self.repo.write_config("daemon.yaml", DAEMON.format(max_parallel=max_parallel, privacy=privacy))
        self.repo.write_config("tools.yaml", yaml.safe_dump({"tools": entries}))
        self.repo.write_config("agents.yaml", yaml.safe_dump({"agents": {"default": {"tool": "plain"}, **agents}}))
        self.repo.write_config("policies.yaml", yaml.safe_dump(policies or {}))

    def submit(self, task_id: str, *lines: str, agent: str = "dev", **extra: Any) -> Path:
        return self.repo.submit(task_id, agent=agent, description="\n".join(lines), **extra)

    def run_once(self, clock: Callable[[], float] = time.time) -> list[dict[str, Any]]:
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            with capture_logs() as logs:
                assert Daemon(self.repo.config(), env=dict(os.environ), once=True, clock=clock).run() == 0
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        return logs

    def done(self, task_id: str, agent: str = "dev") -> dict[str, Any]:
        return self.repo.done_doc(task_id, agent)

    def assigned(self, task_id: str, agent: str = "dev") -> dict[str, Any]:
        document = yaml.safe_load((self.repo.board / "assigned" / agent / f"{task_id}.yaml").read_text())
        assert isinstance(document, dict)
        return document

    def events(self) -> list[tuple[str, float, str, str]]:
        return AgentRecords(self.out).events()

    def argv(self, task_id: str) -> list[str]:
        """The arguments the agent got, the prompt left out."""
        argv: list[str] = AgentRecords(self.out).last(task_id)["argv"]
        return argv[:-1]

    def spend(self, usd: float, at: float | None = None, agent: str = "dev") -> None:
        telemetry = Telemetry(self.repo.telemetry_db)
        moment = time.time() if at is None else at
        row = telemetry.start(InvocationStart("earlier-task", agent, "plain", None, 1, moment))
        telemetry.finish(row, InvocationEnd(moment + 1, 1.0, "ok", cost_usd=usd))


@pytest.fixture
def board(tmp_path: Path) -> Board:
    repo = make_repo(tmp_path)
    return Board(repo, repo.agent_bin, repo.out)


def max_overlap(events: list[tuple[str, float, str, str]], tool: str) -> int:
    current = peak = 0
    for word, _, _, _ in sorted((e for e in events if e[2] == tool), key=lambda e: (e[1], e[0] == "start")):
        current += 1 if word == "start" else -1
        peak = max(peak, current)
    return peak


# ------------------------------------------------------------------ routing and fallbacks
def test_a_fallback_is_taken_and_the_result_and_telemetry_say_why(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "locked", "fallback": ["ghost", "plain"]}},
                    tools={"locked": {"credentials_env": ["POLICY_NO_SUCH_KEY"]}})
    board.submit("fallback", "FAKE write out.txt")
    board.run_once()
    document = board.done("fallback")
    result = document["result"]
    assert document["status"] == "done" and result["tool"] == "plain"
    routing = result["routing"]
    assert routing["chosen"] == "plain:default" and routing["why"] == "fallback plain"
    skipped = {entry["tool"]: entry["reason"] for entry in routing["skipped"]}
    assert skipped["locked"].startswith("not logged in") and "POLICY_NO_SUCH_KEY" in skipped["locked"]
    assert skipped["ghost"].startswith("not installed") and "conveyor-test-no-such-agent-cli" in skipped["ghost"]
    rows = board.repo.rows("fallback")
    assert [row["tool"] for row in rows] == ["plain"]                  # skipped tools never ran
    assert json.loads(rows[0]["routing"])["skipped"] == routing["skipped"]


def test_a_rate_limit_falls_back_and_pauses_only_that_tool(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "limited", "fallback": ["plain"]}})
    board.submit("first", "FAKE limited:api-error@1 429 600", "FAKE write a.txt")
    before = time.time()
    board.run_once()
    after = time.time()
    result = board.done("first")["result"]
    assert result["tool"] == "plain"
    assert result["routing"]["skipped"][0]["reason"].startswith("rate_limited (HTTP 429); paused until")
    assert [(row["tool"], row["outcome"]) for row in board.repo.rows("first")] == [("limited", "rate_limited"),
                                                                                  ("plain", "ok")]
    board.submit("second", "FAKE write b.txt")          # limited is still paused: straight to plain
    board.run_once()
    assert [row["tool"] for row in board.repo.rows("second")] == ["plain"]
    status = collect_status(board.repo.config(), time.time())
    assert [pause["tool"] for pause in status.paused_tools] == ["limited"]
    # the reset is 600 s after the 429, which came during the run (bounds, not a tolerance: a slow machine
    # makes the run long, not the pause wrong); the ISO form keeps whole seconds
    assert int(before) + 600 <= parse_iso(status.paused_tools[0]["until"]) <= after + 600


# ------------------------------------------------------------------ provider limits: pause, resume, no attempt spent
def test_a_429_with_a_reset_time_pauses_and_resumes_without_spending_an_attempt(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "limited"}})            # attempts: 1, so a spent attempt would fail it
    board.submit("limited", "FAKE limited:api-error@1 429 3", "FAKE write a.txt")
    before = time.time()
    logs = board.run_once()
    after = time.time()
    document = board.assigned("limited")
    assert (document["status"], document["attempt"]) == ("assigned", 0)
    assert any(e["event"] == "tool.paused" and e["tool"] == "limited" for e in logs)
    pauses = json.loads((board.repo.config().state_dir / PAUSES_FILE).read_text())["pauses"]
    assert pauses[0]["tool"] == "limited" and before + 3 <= pauses[0]["until"] <= after + 3
    status = collect_status(board.repo.config(), time.time())      # no daemon running: read from the file
    assert status.paused_tools[0]["tool"] == "limited"
    shown = CliRunner().invoke(status_command, ["--repo", str(board.repo.path)], env={"COLUMNS": "200"})
    assert "tool limited paused until" in shown.output and "resumes by itself" in shown.output

    logs = board.run_once()                                        # still paused: nothing runs
    assert board.assigned("limited")["attempt"] == 0 and len(board.repo.rows("limited")) == 1
    assert any(e["event"] == "task.held" and "paused until" in e["reason"] for e in logs)

    board.run_once(clock=lambda: time.time() + 5)                  # the reset time has passed
    document = board.done("limited")
    assert document["status"] == "done" and document["attempt"] == 1 and document["result"]["tool"] == "limited"
    assert [row["outcome"] for row in board.repo.rows("limited")] == ["rate_limited", "ok"]


def test_expired_auth_pauses_the_tool_and_says_to_log_in_again(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "limited"}})
    board.submit("auth", "FAKE limited:api-error@1 401", "FAKE write a.txt")
    logs = board.run_once()
    assert board.assigned("auth")["attempt"] == 0
    event = next(e for e in logs if e["event"] == "tool.auth_expired")
    assert event["tool"] == "limited" and "log in" in event["action"]
    assert board.repo.rows("auth")[0]["outcome"] == "auth_expired"


# ------------------------------------------------------------------ budgets
def test_a_hard_budget_holds_tasks_in_inbox_untouched_until_a_reload_raises_it(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "plain"}},
                    policies={"budgets": [{"scope": "global", "period": "daily", "usd": 1.0, "limit": "hard"}]})
    board.spend(1.5)
    paths = [board.submit(name, "FAKE write out.txt") for name in ("held-1", "held-2")]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in paths}
    config = board.repo.config()
    config.state_dir.mkdir(parents=True, exist_ok=True)            # a pause left by an earlier run
    ToolHealth(config.state_dir / PAUSES_FILE, lambda: config.policies.backoff, time.time).record_limit(
        "limited", Outcome.RATE_LIMITED, reset_at=time.time() + 900)
    clock = TestClock()
    with capture_logs() as logs, board.repo.serving(config=config, clock=clock, watch=False) as daemon:
        wait_for(lambda: len([e for e in logs if e["event"] == "task.held"]) == 2)
        clock.wait_looks(20, "the daemon's next passes to read the clock")   # a few more passes: still untouched
        assert {p: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in paths} == before
        status = collect_status(board.repo.config(), time.time())
        assert status.daemon is not None and status.daemon["running"]
        assert [pause["tool"] for pause in status.paused_tools] == ["limited"]   # from the daemon's snapshot
        waiting = {entry["id"]: entry for entry in status.waiting}
        assert set(waiting) == {"held-1", "held-2"} and status.queued == []
        assert "global daily budget of $1.00 reached ($1.50 spent" in waiting["held-1"]["reason"]
        assert waiting["held-1"]["until"].endswith("T00:00:00Z")
        snapshot = json.loads((board.repo.config().state_dir / STATUS_FILE).read_text())
        assert {entry["id"] for entry in snapshot["waiting"]} == {"held-1", "held-2"}
        board.repo.write_config("policies.yaml", yaml.safe_dump(
            {"budgets": [{"scope": "global", "period": "daily", "usd": 100.0, "limit": "hard"}]}))
        daemon.request_reload()
        wait_for(lambda: all(board.repo.done_path(name, "dev").exists() for name in ("held-1", "held-2")))
    assert board.done("held-1")["status"] == "done" and board.done("held-2")["status"] == "done"


def test_a_spent_hard_budget_lifts_when_its_window_rolls_over(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "plain"}},
                    policies={"budgets": [{"scope": "dev", "period": "daily", "usd": 1.0, "limit": "hard"}]})
    board.spend(5.0)
    board.submit("tomorrow", "FAKE write out.txt")
    board.submit("other-agent", "FAKE write out.txt", agent="docs")     # another scope is not held
    board.run_once()
    assert (board.repo.inbox / "tomorrow.yaml").exists()
    assert board.done("other-agent", "docs")["status"] == "done"
    board.run_once(clock=lambda: time.time() + 86400)
    assert board.done("tomorrow")["status"] == "done"


def test_a_soft_budget_only_warns(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "plain"}},
                    policies={"budgets": [{"scope": "global", "period": "monthly", "usd": 1.0, "limit": "soft"}]})
    board.spend(2.0)
    board.submit("warned", "FAKE write out.txt")
    logs = board.run_once()
    document = board.done("warned")
    assert document["status"] == "done"
    assert "global monthly budget of $1.00 reached" in document["result"]["budget_warning"]
    assert any(e["event"] == "budget.soft_exceeded" and e["scope"] == "global" for e in logs)


# ------------------------------------------------------------------ pacing
def test_per_tool_concurrency_is_never_exceeded_under_a_flood(board: Board) -> None:
    board.configure(agents={"capped": {"tool": "slow"}, "free": {"tool": "plain"}}, max_parallel=5,
                    policies={"tools": {"slow": {"max_parallel": 2}}})
    for index in range(20):
        board.submit(f"capped-{index:02d}", "FAKE sleep 0.3", agent="capped", expect_changes=False)
    for index in range(4):
        board.submit(f"free-{index}", "FAKE sleep 0.15", agent="free", expect_changes=False, priority="low")
    board.run_once()
    for index in range(20):
        assert board.done(f"capped-{index:02d}", "capped")["status"] == "done"
    events = board.events()
    assert max_overlap(events, "slow") == 2                     # the limit was reached and never exceeded
    assert len([e for e in events if e[0] == "start" and e[2] == "slow"]) == 20
    last_capped_start = max(at for word, at, tool, _ in events if word == "start" and tool == "slow")
    free_starts = [at for word, at, tool, _ in events if word == "start" and tool == "plain"]
    assert len(free_starts) == 4 and max(free_starts) < last_capped_start   # not queued behind the capped ones


def test_starts_per_minute_per_tool(board: Board) -> None:
    board.configure(agents={"dev": {"tool": "plain"}}, max_parallel=3,
                    policies={"tools": {"plain": {"starts_per_minute": 2}}})
    for index in range(3):
        board.submit(f"paced-{index}", "FAKE say hi", expect_changes=False)
    board.run_once()
    starts = [e for e in board.events() if e[0] == "start"]
    assert len(starts) == 2
    waiting = [path.stem for path in (board.repo.board / "assigned" / "dev").glob("*.yaml")]
    assert len(waiting) == 1 and "started_at" not in board.assigned(waiting[0])   # claimed, waiting for a start


# ------------------------------------------------------------------ per-task ceilings, a third CLI
def test_cost_and_turn_ceilings_reach_only_clis_that_support_them(board: Board) -> None:
    flagged = ["--task", "{task_id}", ["--max-budget-usd", "{max_cost_usd}"], ["--max-turns", "{max_turns}"],
               "{prompt}"]
    board.configure(agents={"dev": {"tool": "capable", "max_cost_usd": 2.0, "max_turns": 7},
                            "other": {"tool": "basic", "max_cost_usd": 2.0, "max_turns": 7}},
                    tools={"capable": {"argv": flagged, "supports": ["max_cost_usd", "max_turns"]},
                           "basic": {"argv": flagged}})
    board.submit("ceiling", "FAKE say ok", expect_changes=False, max_cost_usd=0.5)
    board.submit("no-ceiling", "FAKE say ok", agent="other", expect_changes=False, max_cost_usd=0.5)
    board.run_once()
    assert board.argv("ceiling") == ["--task", "ceiling", "--max-budget-usd", "0.50", "--max-turns", "7"]
    assert board.argv("no-ceiling") == ["--task", "no-ceiling"]


def test_a_third_cli_needs_only_yaml(board: Board, tmp_path: Path) -> None:
    script = tmp_path / "bin" / "gemini"
    script.write_text(textwrap.dedent("""\
        #!/bin/sh
        prompt=$(cat)
        case "$prompt" in *"Task third"*) ;; *) echo "no task in prompt" >&2; exit 3 ;; esac
        echo "made by a third CLI" > third.txt
        echo "gemini: wrote third.txt"
        """))
    script.chmod(0o755)
    board.configure(agents={"dev": {"tool": "gemini"}},
                    tools={"gemini": {"binary": str(script), "argv": ["--yolo"], "prompt_via": "stdin",
                                      "parser": "text", "env": {}}})
    board.submit("third")
    board.run_once()
    result = board.done("third")["result"]
    assert result["tool"] == "gemini" and result["artefacts"] == ["third.txt"]
    assert board.repo.git("show", "conveyor/third:third.txt") == "made by a third CLI"


# ------------------------------------------------------------------ privacy
MARKER = "ZEBRA-PRIVACY-MARKER-7731"


@pytest.mark.parametrize("privacy", ["metadata", "full"])
def test_metadata_mode_keeps_no_prompt_or_response_text(board: Board, privacy: str) -> None:
    board.configure(agents={"dev": {"tool": "plain"}}, privacy=privacy)
    board.submit("private-ok", f"Secret plan {MARKER}.", f"FAKE say {MARKER}", "FAKE write a.txt")
    board.submit("private-fail", f"Secret plan {MARKER}.", step("print", text=f"error: {MARKER}", stream="stderr"),
                 "FAKE exit 2")
    logs = board.run_once()
    assert board.done("private-ok")["status"] == "done" and board.done("private-fail")["status"] == "error"
    config: Config = board.repo.config()
    state_bytes = b"".join(path.read_bytes() for path in config.state_dir.rglob("*") if path.is_file())
    db_bytes = b"".join(Path(f"{config.telemetry_db}{suffix}").read_bytes() for suffix in ("", "-wal", "-shm")
                        if Path(f"{config.telemetry_db}{suffix}").exists())
    log_text = repr(logs)
    marker = MARKER.encode()
    if privacy == "metadata":
        assert marker not in state_bytes and marker not in db_bytes and MARKER not in log_text
        assert not any(path.is_file() for path in config.logs_dir.rglob("*"))      # no transcripts kept
        rows = board.repo.rows("private-fail")
        assert rows[0]["error"] == rows[0]["outcome"] == "crashed"          # our classification, not its words
        assert rows[0]["prompt"] is None and rows[0]["final_text"] is None
        said = CliRunner().invoke(logs_command, ["--repo", str(board.repo.path), "private-ok"])
        assert said.exit_code == 1 and "not kept" in said.output and "privacy: full" in said.output
    else:
        assert marker in db_bytes and MARKER in board.repo.rows("private-ok")[0]["prompt"]
        assert MARKER in board.repo.rows("private-fail")[0]["error"]
        shown = CliRunner().invoke(logs_command, ["--repo", str(board.repo.path), "private-ok"])
        assert shown.exit_code == 0 and MARKER in shown.output


# ------------------------------------------------------------------ helpers
