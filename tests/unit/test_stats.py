"""`conveyor stats` numbers on a seeded database, checked against hand-computed values (p50/p95 by nearest
rank), the rollups against a plain-Python reference, the v1 → current migration, merge detection, and the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.conftest import git

from conveyor.cli.stats_cmd import command as stats_command
from conveyor.config import load_config
from conveyor.publish.outcomes import detect_outcomes
from conveyor.runner.types import Tokens
from conveyor.telemetry import stats
from conveyor.telemetry import store as telemetry_module
from conveyor.telemetry.store import SCHEMA_VERSION, InvocationEnd, InvocationStart, Telemetry


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


DAY1, DAY2, DEC1 = ts("2026-11-20T00:00:00"), ts("2026-11-21T09:00:00"), ts("2026-12-01T08:00:00")


def add(db: Telemetry, agent: str, tool: str, model: str | None, at: float, duration: float, outcome: str,
        cost: float, tokens: Tokens | None = None, task: str = "t") -> int:
    row = db.start(InvocationStart(task, agent, tool, model, 1, at))
    db.finish(row, InvocationEnd(at + duration, duration, outcome, tokens=tokens or Tokens(), cost_usd=cost))
    return row


Row = tuple[str, str, str | None, float, float | None, str, float, Tokens]


def bulk(db: Telemetry, rows: list[Row]) -> None:
    """Insert each row as the daemon does (a 'running' row, then its end), in one transaction for speed."""
    with db.connect() as conn:
        conn.execute("BEGIN IMMEDIATE")
        for agent, tool, model, at, duration, outcome, cost, tokens in rows:
            row_id = conn.execute("INSERT INTO invocations (task_id, agent, tool, model, started_at) VALUES"
                                  " ('t', ?, ?, ?, ?)", (agent, tool, model, at)).lastrowid
            if outcome != "running":
                conn.execute("UPDATE invocations SET outcome=?, duration_s=?, cost_usd=?, input_tokens=?,"
                             " output_tokens=?, cache_read_tokens=?, cache_write_tokens=? WHERE id=?",
                             (outcome, duration, cost, tokens.input, tokens.output, tokens.cache_read,
                              tokens.cache_write, row_id))
        conn.execute("COMMIT")


def seed(db: Telemetry) -> None:
    """The hand-computed fixture (see each test for the arithmetic)."""
    rows: list[Row] = [   # opus on day 1: durations 1..10 s at second i, 8 ok, 0.10 USD each
        ("backend", "claude-code", "opus", DAY1 + i, float(i), "ok" if i <= 8 else "agent_error", 0.10,
         Tokens(100, 10, 5, 1)) for i in range(1, 11)]
    rows += [("frontend", "codex", None, DAY1 + 43200, 100.0, "ok", 0.50, Tokens()),
             ("frontend", "codex", None, DAY1 + 43300, 200.0, "crashed", 0.50, Tokens()),
             ("frontend", "claude-code", "opus", DAY2, 50.0, "ok", 2.00, Tokens(1000, 100, 0, 0)),
             ("backend", "codex", "gpt-5", DEC1, 0.05, "ok", 0.25, Tokens()),
             ("backend", "codex", "gpt-5", DEC1 + 5, None, "running", 0.0, Tokens()),      # still running
             ("backend", "ghost", None, DEC1 + 9, 0.0, "skipped", 0.0, Tokens())]          # never started
    bulk(db, rows)


@pytest.fixture
def db(tmp_path: Path) -> Telemetry:
    telemetry = Telemetry(tmp_path / "telemetry.db")
    seed(telemetry)
    return telemetry


def collect(db: Telemetry, by: str, window: stats.Window | None = None) -> dict[Any, dict[str, Any]]:
    with db.connect() as conn:
        return {row["key"]: row for row in stats.collect(conn, by, window or stats.Window())}  # type: ignore[arg-type]


def pick(row: dict[str, Any], *names: str) -> tuple[Any, ...]:
    return tuple(row[name] for name in names)


MAIN = ("invocations", "ok", "cost_usd", "p50_s", "p95_s")


def test_by_model(db: Telemetry) -> None:
    rows = collect(db, "model")
    assert list(rows) == [None, "gpt-5", "opus"]
    assert pick(rows[None], *MAIN) == (2, 1, 1.0, 100.0, 200.0)          # ranks ⌈.5·2⌉=1, ⌈.95·2⌉=2
    assert pick(rows["gpt-5"], *MAIN) == (1, 1, 0.25, 0.05, 0.05)
    assert pick(rows["opus"], *MAIN) == (11, 9, 3.0, 6.0, 50.0)           # 1..10, 50: ranks 6 and 11
    assert rows["opus"]["success_rate"] == round(9 / 11, 4)
    assert pick(rows["opus"], "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens") == (
        2000, 200, 50, 10)


def test_by_agent_and_tool(db: Telemetry) -> None:
    agents = collect(db, "agent")
    assert pick(agents["backend"], *MAIN) == (11, 9, 1.25, 5.0, 10.0)    # 0.05, 1..10: ranks 6 and 11
    assert pick(agents["frontend"], *MAIN) == (3, 2, 3.0, 100.0, 200.0)  # 50, 100, 200: ranks 2 and 3
    tools = collect(db, "tool")
    assert list(tools) == ["claude-code", "codex"]                        # the skipped ghost row is not a run
    assert pick(tools["claude-code"], *MAIN) == (11, 9, 3.0, 6.0, 50.0)
    assert pick(tools["codex"], *MAIN) == (3, 2, 1.25, 100.0, 200.0)


def test_by_day_and_month(db: Telemetry) -> None:
    days = collect(db, "day")
    assert list(days) == ["2026-11-20", "2026-11-21", "2026-12-01"]
    assert pick(days["2026-11-20"], *MAIN) == (12, 9, 2.0, 6.0, 200.0)   # 1..10,100,200: ranks 6 and 12
    assert pick(days["2026-11-21"], *MAIN) == (1, 1, 2.0, 50.0, 50.0)
    months = collect(db, "month")
    assert pick(months["2026-11"], *MAIN) == (13, 10, 4.0, 7.0, 200.0)   # 13 values: ranks 7 and 13
    assert pick(months["2026-12"], *MAIN) == (1, 1, 0.25, 0.05, 0.05)


def test_windows_whole_days_and_partial_days(db: Telemetry) -> None:
    since_day2 = collect(db, "model", stats.Window(since=stats.parse_moment("2026-11-21")))
    assert pick(since_day2["opus"], *MAIN) == (1, 1, 2.0, 50.0, 50.0)
    assert set(since_day2) == {"opus", "gpt-5"}
    partial = collect(db, "model", stats.Window(since=DAY1 + 5.5))        # opus rows 6..10 of day 1, and day 2
    assert pick(partial["opus"], *MAIN) == (6, 4, 2.5, 8.0, 50.0)          # 6,7,8,9,10,50: ranks 3 and 6
    until_day1 = collect(db, "agent", stats.Window(until=stats.parse_moment("2026-11-20", end_of_day=True)))
    assert pick(until_day1["backend"], *MAIN) == (10, 8, 1.0, 5.0, 10.0)
    assert pick(until_day1["frontend"], *MAIN) == (2, 1, 1.0, 100.0, 200.0)
    inside_one_day = collect(db, "day", stats.Window(since=DAY1 + 2.5, until=DAY1 + 6.5))
    assert pick(inside_one_day["2026-11-20"], *MAIN) == (4, 4, 0.4, 4.0, 6.0)   # 3,4,5,6: ranks 2 and 4


def test_moments_are_dates_or_iso() -> None:
    assert stats.parse_moment("2026-11-20") == DAY1
    assert stats.parse_moment("2026-11-20", end_of_day=True) == DAY1 + 86400
    assert stats.parse_moment("2026-11-20T00:00:05Z") == DAY1 + 5
    assert stats.parse_moment("2026-11-20T01:00:00+01:00") == DAY1
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        stats.parse_moment("last tuesday")


# ------------------------------------------------------------------ rollups agree with the rows
def reference(rows: list[dict[str, Any]], by: str, window: stats.Window) -> dict[Any, tuple[Any, ...]]:
    """Plain Python over every row: what the SQL must produce."""
    keyed: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        if row["outcome"] in ("running", "skipped"):
            continue
        if (window.since is not None and row["started_at"] < window.since) or (
                window.until is not None and row["started_at"] >= window.until):
            continue
        moment = datetime.fromtimestamp(row["started_at"], UTC)
        key = {"day": moment.strftime("%Y-%m-%d"), "month": moment.strftime("%Y-%m")}.get(by, row.get(by))
        keyed.setdefault(key, []).append(row)
    out = {}
    for key, group in keyed.items():
        durations = sorted(r["duration_s"] for r in group if r["duration_s"] is not None)

        def rank(fraction: float, durations: list[float] = durations) -> float | None:
            return round(durations[max(math.ceil(fraction * len(durations)) - 1, 0)], 3) if durations else None

        out[key] = (len(group), sum(r["outcome"] == "ok" for r in group), round(sum(r["cost_usd"] for r in group), 6),
                    rank(0.5), rank(0.95))
    return out


def test_rollups_and_histograms_match_a_plain_reference_after_updates_and_deletes(tmp_path: Path) -> None:
    db = Telemetry(tmp_path / "t.db")
    rng = random.Random(5)
    bulk(db, [(rng.choice(["a", "b", "c"]), rng.choice(["claude-code", "codex"]), rng.choice(["opus", "gpt-5", None]),
               DAY1 + rng.uniform(-3, 40) * 86400,
               rng.choice([rng.uniform(0, 2), rng.uniform(0, 90), rng.expovariate(1 / 600), 40000.0]),
               rng.choice(["ok", "ok", "agent_error", "timeout", "running"]), round(rng.uniform(0, 1), 3), Tokens())
              for _ in range(600)])
    with db.connect() as conn:
        conn.execute("UPDATE invocations SET outcome='ok', duration_s=duration_s*2 WHERE id % 7 = 0")
        conn.execute("DELETE FROM invocations WHERE id % 11 = 0")
        conn.execute("UPDATE invocations SET duration_s=NULL WHERE id % 13 = 0")
        conn.execute("UPDATE invocations SET model='opus', agent='z' WHERE id % 17 = 0")
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute("SELECT * FROM invocations")]
    windows = [stats.Window(), stats.Window(since=DAY1), stats.Window(since=DAY1 + 3600.5, until=DAY1 + 20 * 86400 + 7),
               stats.Window(since=DAY1 + 100, until=DAY1 + 200)]
    for by in stats.GROUPS:
        for window in windows:
            got = {key: pick(row, *MAIN) for key, row in collect(db, by, window).items()}
            want = reference(rows, by, window)
            assert set(got) == set(want), (by, window)
            for key in want:
                assert got[key][:2] == want[key][:2] and got[key][3:] == want[key][3:], (by, window, key)
                assert got[key][2] == pytest.approx(want[key][2], abs=1e-6)


# ------------------------------------------------------------------ schema migration
def test_a_version_1_database_is_migrated_in_place_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(telemetry_module._SCHEMA + "PRAGMA user_version = 1;")
    conn.execute("INSERT INTO invocations (task_id, agent, tool, model, started_at, duration_s, outcome, cost_usd)"
                 " VALUES ('old', 'backend', 'codex', 'gpt-5', ?, 12.0, 'ok', 0.75)", (DAY1,))
    conn.commit()
    conn.close()
    db = Telemetry(path)
    with db.connect() as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in check.execute("PRAGMA table_info(invocations)")}
    assert "routing" in columns
    assert pick(collect(db, "model")["gpt-5"], *MAIN) == (1, 1, 0.75, 12.0, 12.0)   # the rollups were backfilled
    row = db.start(InvocationStart("new", "backend", "codex", "gpt-5", 1, DAY1 + 1, routing='{"chosen": "codex"}'))
    assert db.rows_for_task("new")[0]["routing"] == '{"chosen": "codex"}' and row > 1
    Telemetry(path)                                                                  # opening again is a no-op


# ------------------------------------------------------------------ outcomes: merged locally, or per the publisher
class Publisher:
    """What detection asks of a publisher (GitHub is tested with its own fake server elsewhere)."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states, self.asked, self.closed = states, [], False

    def state_of(self, head: str) -> str | None:
        self.asked.append(head)
        return self.states.get(head)

    def close(self) -> None:
        self.closed = True


def commit_on_branch(repo: Path, branch: str, name: str) -> str:
    git(repo, "checkout", "-q", "-b", branch, "main")
    (repo / name).write_text(name)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"work {name}")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return sha


def test_merges_are_detected_locally_and_closed_requests_through_the_publisher(git_repo: Path) -> None:
    config = load_config(git_repo, git_repo / ".git")
    db = Telemetry(config.telemetry_db)
    branches = {}
    for task_id, agent, cost in (("t1", "backend", 1.0), ("t2", "backend", 3.0), ("t3", "frontend", 2.0),
                                 ("t4", "frontend", 0.5)):
        branch = f"conveyor/{task_id}"
        sha = commit_on_branch(git_repo, branch, f"{task_id}.txt")
        row = add(db, agent, "codex", "gpt-5", DAY1 + 60, 10.0, "ok", cost, task=task_id)
        db.record_result(row, commit_sha=sha, pr_url=None, branch=branch)
        branches[task_id] = branch
    git(git_repo, "merge", "-q", "--no-ff", "-m", "merge t1", branches["t1"])
    git(git_repo, "merge", "-q", "--no-ff", "-m", "merge t3", branches["t3"])
    git(git_repo, "branch", "-q", "-D", branches["t3"])                # merged, then the branch was deleted
    publisher = Publisher({branches["t2"]: "closed", branches["t4"]: "open"})
    recorded = detect_outcomes(config, db, lambda _config: publisher, clock=lambda: DAY1 + 3600)
    assert sorted((r["task_id"], r["state"]) for r in recorded) == [("t1", "merged"), ("t2", "closed"),
                                                                      ("t3", "merged")]
    assert sorted(publisher.asked) == [branches["t2"], branches["t4"]] and publisher.closed
    assert detect_outcomes(config, db, lambda _config: Publisher({})) == []   # t4 is still open: asked again
    agents = collect(db, "agent")
    assert pick(agents["backend"], "merged", "closed", "acceptance_rate", "cost_per_merged_usd") == (1, 1, 0.5, 4.0)
    assert pick(agents["frontend"], "merged", "closed", "acceptance_rate", "cost_per_merged_usd") == (1, 0, 1.0, 2.5)
    tools = collect(db, "tool")
    assert pick(tools["codex"], "merged", "closed", "acceptance_rate") == (2, 1, round(2 / 3, 4))


def test_without_a_publisher_only_local_merges_count(git_repo: Path) -> None:
    config = load_config(git_repo, git_repo / ".git")
    db = Telemetry(config.telemetry_db)
    sha = commit_on_branch(git_repo, "conveyor/t9", "t9.txt")
    db.record_result(add(db, "a", "codex", None, DAY1, 1.0, "ok", 1.0, task="t9"), commit_sha=sha, pr_url=None,
                     branch="conveyor/t9")
    assert detect_outcomes(config, db, None) == []


# ------------------------------------------------------------------ the command
@pytest.fixture
def seeded_repo(git_repo: Path) -> Path:
    (git_repo / "config").mkdir()
    config = load_config(git_repo, git_repo / ".git")
    db = Telemetry(config.telemetry_db)
    seed(db)
    bulk(db, [("an-agent-with-a-really-quite-remarkably-long-name", "claude-code", "claude-opus-4-5-extended-name",
               DAY2, 1234.5, "ok", 123456.789, Tokens(987654321, 12345678, 1234567890, 99999))])
    return git_repo


def run_stats(repo: Path, *args: str) -> str:
    result = CliRunner().invoke(stats_command, ["--repo", str(repo), *args], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("by", [None, *stats.GROUPS])
def test_the_table_fits_80_columns(seeded_repo: Path, by: str | None) -> None:
    output = run_stats(seeded_repo, *(["--by", by] if by else []))
    widths = [len(line) for line in output.splitlines()]
    assert max(widths) <= 80, output
    assert "p95 s" in output and "cache write" in output


def test_the_agent_table_shows_cost_per_merged_change(seeded_repo: Path) -> None:
    output = run_stats(seeded_repo, "--by", "agent")
    assert "USD/merged" in output and "accept %" in output


def test_json_and_csv(seeded_repo: Path) -> None:
    data = json.loads(run_stats(seeded_repo, "--by", "model", "--format", "json", "--since", "2026-11-21",
                                "--until", "2026-11-30"))
    assert list(data) == ["model"]
    opus = next(row for row in data["model"] if row["key"] == "opus")
    assert (opus["invocations"], opus["input"], opus["p50_s"]) == (1, 1000, 50.0)
    rows = list(csv.DictReader(io.StringIO(run_stats(seeded_repo, "--by", "tool", "--format", "csv"))))
    codex = next(row for row in rows if row["key"] == "codex")
    assert (codex["group"], codex["invocations"], codex["p95_s"], codex["merged"]) == ("tool", "3", "200.0", "0")


def test_a_bad_date_is_a_usage_error(seeded_repo: Path) -> None:
    result = CliRunner().invoke(stats_command, ["--repo", str(seeded_repo), "--since", "yesterday"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
