"""Telemetry in SQLite: WAL, a versioned schema, and one row per invocation written at start, completed at end."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.runner.types import Tokens
from conveyor.telemetry import store
from conveyor.telemetry.store import SCHEMA_VERSION, InvocationEnd, InvocationStart, Telemetry, TelemetryError
from tests.integration.conftest import Repo, tools_yaml
from tests.support.agent_script import step


def pragma(db: Path, name: str) -> object:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def start(telemetry: Telemetry, task_id: str = "t", agent: str = "dev", tool: str = "fake",
          started_at: float = 1000.0, prompt: str | None = "the prompt") -> int:
    invocation = InvocationStart(task_id, agent, tool, "m1", 1, started_at, f"conveyor/{task_id}", prompt)
    return int(telemetry.start(invocation))


def end(outcome: str = "ok", cost: float = 0.5, **extra: object) -> InvocationEnd:
    fields: dict[str, object] = {"finished_at": 1010.0, "duration_s": 10.0, "outcome": outcome, "exit_code": 0,
                                 "tokens": Tokens(100, 20, 5, 1), "cost_usd": cost, "cost_source": "reported",
                                 "session_id": "s1", "turns": 2, "final_text": "all done"}
    fields.update(extra)
    return InvocationEnd(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the database itself
def test_new_database_is_wal_with_the_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "state" / "telemetry.db"
    Telemetry(db)
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "user_version") == SCHEMA_VERSION


def test_a_version_3_database_gains_the_role_column_in_place(tmp_path: Path) -> None:
    """Rows written before the review stage existed are the author's runs."""
    db = tmp_path / "telemetry.db"
    # a v3 database as v3 built it: the schema, then migrations 1 and 2
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript(store._SCHEMA)
    for version in (1, 2):
        for statement in store.MIGRATIONS[version]():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO invocations (task_id, agent, tool, started_at) VALUES ('t-old', 'dev', 'fake', 1.0)")
    conn.close()
    telemetry = Telemetry(db)
    assert pragma(db, "user_version") == SCHEMA_VERSION == 4
    row_id = telemetry.start(InvocationStart("t-new", "dev", "codex", None, 1, 2.0, role="reviewer"))
    rows = {row["task_id"]: row for task in ("t-old", "t-new") for row in telemetry.rows_for_task(task)}
    assert (rows["t-old"]["role"], rows["t-new"]["role"], rows["t-new"]["id"]) == ("author", "reviewer", row_id)


def test_a_database_from_a_newer_conveyor_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(TelemetryError) as caught:
        Telemetry(db)
    message = str(caught.value)
    assert str(db) in message
    assert f"newer Conveyor (schema {SCHEMA_VERSION + 1}, this one knows {SCHEMA_VERSION})" in message
    assert "upgrade Conveyor or point telemetry_db elsewhere" in message
    assert pragma(db, "user_version") == SCHEMA_VERSION + 1
    assert pragma(db, "journal_mode") == "delete"   # not switched to WAL either


def test_reopening_keeps_the_rows(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    row = start(Telemetry(db))
    assert Telemetry(db).rows_for_task("t")[0]["id"] == row


def test_an_unusable_location_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TelemetryError, match="cannot create"):
        Telemetry(blocker / "telemetry.db")


# ------------------------------------------------------------------ rows
def test_start_writes_a_running_row_and_finish_completes_it(tmp_path: Path) -> None:
    telemetry = Telemetry(tmp_path / "t.db")
    row_id = start(telemetry)
    (row,) = telemetry.rows_for_task("t")
    assert (row["outcome"], row["finished_at"], row["attempt"], row["branch"]) == ("running", None, 1,
                                                                                    "conveyor/t")
    telemetry.finish(row_id, end(model="m2", tool="fake-2"))
    (row,) = telemetry.rows_for_task("t")
    assert row["outcome"] == "ok"
    assert (row["finished_at"], row["duration_s"], row["exit_code"]) == (1010.0, 10.0, 0)
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == \
        (100, 20, 5, 1)
    assert (row["cost_usd"], row["cost_source"], row["session_id"], row["turns"]) == (0.5, "reported", "s1", 2)
    assert (row["model"], row["tool"]) == ("m2", "fake-2")
    telemetry.record_result(row_id, commit_sha="abc", pr_url="https://example.invalid/pr/1", branch=None)
    (row,) = telemetry.rows_for_task("t")
    assert (row["commit_sha"], row["pr_url"], row["branch"]) == ("abc", "https://example.invalid/pr/1",
                                                                  "conveyor/t")


def test_metadata_privacy_never_stores_text(tmp_path: Path) -> None:
    telemetry = Telemetry(tmp_path / "t.db")
    telemetry.finish(start(telemetry), end())
    (row,) = telemetry.rows_for_task("t")
    assert row["prompt"] is None and row["final_text"] is None


def test_full_privacy_stores_prompt_and_final_text(tmp_path: Path) -> None:
    telemetry = Telemetry(tmp_path / "t.db", privacy="full")
    telemetry.finish(start(telemetry), end())
    (row,) = telemetry.rows_for_task("t")
    assert (row["prompt"], row["final_text"]) == ("the prompt", "all done")


def test_rows_left_running_become_interrupted(tmp_path: Path) -> None:
    telemetry = Telemetry(tmp_path / "t.db")
    start(telemetry, "a", started_at=100.0)
    start(telemetry, "b", started_at=100.0)
    telemetry.finish(start(telemetry, "c"), end())
    assert telemetry.mark_interrupted(150.0, ["a"]) == 1
    assert telemetry.mark_interrupted(160.0) == 1
    outcomes = {t: telemetry.rows_for_task(t)[0]["outcome"] for t in "abc"}
    assert outcomes == {"a": "interrupted", "b": "interrupted", "c": "ok"}
    assert telemetry.rows_for_task("a")[0]["duration_s"] == 50.0


def test_spend_and_totals(tmp_path: Path) -> None:
    telemetry = Telemetry(tmp_path / "t.db")
    telemetry.finish(start(telemetry, "a", "dev", "fake", 100.0), end(cost=1.0))
    telemetry.finish(start(telemetry, "b", "dev", "fake", 200.0), end("crashed", cost=0.25))
    telemetry.finish(start(telemetry, "c", "ops", "other", 300.0), end(cost=2.0))
    assert telemetry.spend(0.0) == 3.25
    assert telemetry.spend(150.0, 250.0) == 0.25
    assert telemetry.spend(0.0, agent="dev") == 1.25
    by_agent = {row["key"]: row for row in telemetry.totals("agent")}
    assert (by_agent["dev"]["invocations"], by_agent["dev"]["ok"], by_agent["dev"]["cost_usd"]) == (2, 1, 1.25)
    assert by_agent["ops"]["input"] == 100
    assert [row["key"] for row in telemetry.totals("tool")] == ["other", "fake"]   # by cost, highest first
    with pytest.raises(ValueError, match="cannot group"):
        telemetry.totals("prompt; DROP TABLE invocations")


# ------------------------------------------------------------------ through the daemon
def test_the_row_says_running_while_the_agent_runs_and_is_completed_after(repo: Repo) -> None:
    # the agent peeks into the daemon's database, which the sandbox hides by design: run it uncontained
    repo.write_config("tools.yaml", tools_yaml(repo.agent_bin, repo.out, sandbox="none"))
    peek = step("query", db=str(repo.telemetry_db),
                sql="SELECT outcome, finished_at, tool FROM invocations WHERE task_id=?")
    repo.submit("t-live", agent="json-agent", description=f"{peek}\nFAKE write a.txt x")
    repo.run_once()
    (seen,) = repo.agent.last("t-live")["queries"]
    assert seen == [["running", None, "fake-claude"]]           # read by the agent, mid-run
    (row,) = repo.rows("t-live")
    assert row["outcome"] == "ok" and row["finished_at"] >= row["started_at"]
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == \
        (1200, 340, 50, 7)
    assert (row["cost_usd"], row["cost_source"], row["model"]) == (0.0125, "reported", "fake-model-1")
    assert (row["session_id"], row["turns"], row["exit_code"]) == ("session-t-live", 3, 0)
    result = repo.done_doc("t-live", "json-agent")["result"]
    assert row["commit_sha"] == result["commit"]
    assert result["tokens"] == {"input": 1200, "output": 340, "cache_read": 50, "cache_write": 7}
    assert result["cost_usd"] == 0.0125
    assert row["prompt"] is None and row["final_text"] is None   # privacy: metadata by default


def test_one_row_per_invocation_including_failures(repo: Repo) -> None:
    repo.submit("t-a", description="FAKE write a.txt x")
    repo.submit("t-b", description="FAKE exit 2")
    repo.run_once()
    rows = repo.rows()
    assert sorted((row["task_id"], row["outcome"]) for row in rows) == [("t-a", "ok"), ("t-b", "crashed")]
    failed = next(row for row in rows if row["task_id"] == "t-b")
    assert failed["exit_code"] == 2 and failed["error"]
    assert pragma(repo.telemetry_db, "journal_mode") == "wal"


def test_the_daemon_refuses_a_newer_database(repo: Repo) -> None:
    repo.telemetry_db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(repo.telemetry_db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    repo.submit("t-never", description="FAKE write a.txt x")
    with pytest.raises(TelemetryError, match="newer Conveyor"):
        repo.run_once()
    assert (repo.inbox / "t-never.yaml").exists()     # nothing was claimed
