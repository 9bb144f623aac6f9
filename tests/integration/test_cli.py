"""The `conveyor` command line: exit codes and messages, run in-process through `main()` (the real entry
point, with its error handler) or as a real `python -m conveyor` subprocess."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.cli.main import main
from conveyor.core.task import parse_task
from conveyor.daemon.lock import DaemonLock
from conveyor.telemetry.store import InvocationEnd, InvocationStart, Telemetry
from tests.conftest import git
from tests.integration.conftest import DAEMON_YAML, ConveyorCli, Repo


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`conveyor ARGS` in-process from `cwd`; `main()` scrubs GIT_* from the environment, so they are restored."""

    def run(*args: str, cwd: Path) -> Result:
        saved = {k: v for k, v in os.environ.items() if k.startswith("GIT_")}
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            code = 0
        finally:
            os.environ.update(saved)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


# ------------------------------------------------------------------ init
def test_init_twice_creates_nothing_the_second_time(git_repo: Path, cli: Cli) -> None:
    first = cli("init", cwd=git_repo)
    assert first.code == 0, first.err
    created = [line.split(None, 1)[1] for line in first.out.splitlines() if line.startswith("created")]
    for expected in ("config/daemon.yaml", "config/agents.yaml", "config/tools.yaml", "config/models.yaml",
                     "config/policies.yaml", "ROADMAP.md", ".gitignore (conveyor entries)",
                     "work/collaboration/inbox/.gitkeep", "work/collaboration/done/.gitkeep"):
        assert expected in created
    before = snapshot(git_repo)
    second = cli("init", cwd=git_repo)
    assert second.code == 0
    assert not any(line.startswith("created") for line in second.out.splitlines())
    assert snapshot(git_repo) == before
    assert (git_repo / ".gitignore").read_text().count("# conveyor:") == 1
    assert cli("config", "validate", cwd=git_repo).code == 0        # what init wrote is a working config


def test_init_keeps_a_users_files(git_repo: Path, cli: Cli) -> None:
    (git_repo / "config").mkdir()
    (git_repo / "config" / "daemon.yaml").write_text("max_parallel: 7\n")
    (git_repo / ".gitignore").write_text("node_modules/")
    result = cli("init", cwd=git_repo)
    assert "kept     config/daemon.yaml" in result.out
    assert (git_repo / "config" / "daemon.yaml").read_text() == "max_parallel: 7\n"
    assert (git_repo / ".gitignore").read_text().startswith("node_modules/\n")


# ------------------------------------------------------------------ submit
def test_submit_writes_a_task_that_validates(repo: Repo, cli: Cli) -> None:
    repo.submit("other-task")          # issue 16: a dependency must name a task on the board
    result = cli("submit", "--agent", "backend-dev", "--title", "Add a /health endpoint!", "--description",
                 "Return ok.", "--artefact", "src/health.py", "--artefact", "tests/test_health.py", "--priority",
                 "high", "--depends-on", "other-task", "--complexity", "low", "--tool", "fake", "--verify",
                 "pytest -q", cwd=repo.path)
    assert result.code == 0, result.err
    path = Path(result.out.strip())
    assert path.parent == repo.inbox
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d{4}-backend-dev-add-a-health-endpoint\.yaml", path.name)
    task = parse_task(path)
    assert task.warnings == []
    assert (task.agent, task.title, task.priority) == ("backend-dev", "Add a /health endpoint!", "high")
    assert task.artefacts == ["src/health.py", "tests/test_health.py"]
    assert task.dependencies == ["other-task"]
    assert (task.complexity, task.get_str("tool"), task.get_list("verify")) == ("low", "fake", ["pytest -q"])
    assert task.data["status"] == "new" and task.created_at.endswith("Z")
    assert cli("task", "validate", str(path), cwd=repo.path).code == 0
    # the same title in the same minute gets `-2`; when a minute boundary fell between the two calls, the
    # later one is the first of its minute and the next call is the one that collides
    for _ in range(2):
        again = Path(cli("submit", "--agent", "backend-dev", "--title", "Add a /health endpoint!",
                         cwd=repo.path).out.strip())
        if again.name[:15] == path.name[:15]:
            break
        path = again
    assert again.name == path.name.replace(".yaml", "-2.yaml")


def test_submit_skips_an_id_that_is_archived(repo: Repo, cli: Cli) -> None:
    """The daemon would reject a reused id as a duplicate: an archived task's id is taken too."""
    first = Path(cli("submit", "--agent", "dev", "--title", "Archived one", cwd=repo.path).out.strip())
    archived = repo.board / "archive" / "2020-01" / first.name
    archived.parent.mkdir(parents=True)
    first.rename(archived)
    again = cli("submit", "--agent", "dev", "--title", "Archived one", cwd=repo.path)
    assert again.code == 0 and Path(again.out.strip()).name == first.name.replace(".yaml", "-2.yaml")


def test_submit_refuses_an_unsafe_agent_name(repo: Repo, cli: Cli) -> None:
    result = cli("submit", "--agent", "../escape", "--title", "x", cwd=repo.path)
    assert result.code == 2
    assert "not a safe agent name" in result.err
    assert sorted(p.name for p in repo.inbox.iterdir()) == [".gitkeep"]


def test_submit_refuses_to_overwrite_an_id(repo: Repo, cli: Cli) -> None:
    assert cli("submit", "--agent", "dev", "--title", "x", "--id", "fixed-id", cwd=repo.path).code == 0
    result = cli("submit", "--agent", "dev", "--title", "y", "--id", "fixed-id", cwd=repo.path)
    assert result.code == 2 and "already exists" in result.err
    assert parse_task(repo.inbox / "fixed-id.yaml").title == "x"


def test_a_submitted_task_runs(repo: Repo, cli: Cli) -> None:
    cli("submit", "--agent", "backend-dev", "--title", "t", "--id", "from-cli", "--description",
        "FAKE write cli.txt hello", cwd=repo.path)
    repo.run_once()
    assert repo.done_doc("from-cli")["result"]["artefacts"] == ["cli.txt"]


# ------------------------------------------------------------------ status and stats
def test_status_json_shows_queued_waiting_done_errors_and_rejected(repo: Repo, cli: Cli) -> None:
    repo.submit("st-done", description="FAKE write a.txt x")
    repo.submit("st-error", description="FAKE exit 5")
    repo.drop("st-broken.yaml", "id: [\n")
    repo.run_once()
    repo.submit("st-queued", priority="high")
    repo.submit("st-waiting", dependencies=["st-error"])
    repo.submit("st-later", dependencies=["nobody-yet"])
    result = cli("status", "--format", "json", cwd=repo.path)
    assert result.code == 0, result.err
    status = json.loads(result.out)
    assert [item["id"] for item in status["queued"]] == ["st-queued"]
    assert status["queued"][0]["priority"] == "high"
    reasons = {item["id"]: item["reason"] for item in status["waiting"]}
    assert reasons["st-waiting"].startswith("dependency st-error failed")
    assert reasons["st-later"] == "waiting for nobody-yet, which is not on the board yet"
    assert [item["id"] for item in status["done"]] == ["st-done"]
    assert status["done"][0]["branch"] == "conveyor/st-done"
    assert [item["id"] for item in status["errors"]] == ["st-error"]
    assert "5" in status["errors"][0]["message"]
    assert [item["file"] for item in status["rejected"]] == ["st-broken.yaml"]
    assert status["counts"] == {"queued": 1, "waiting": 2, "running": 0, "claimed": 0, "needs_input": 0, "done": 1,
                                "errors": 1, "rejected": 1}
    assert status["daemon"]["running"] is False


def test_status_table_renders(repo: Repo, cli: Cli) -> None:
    repo.submit("tbl", dependencies=["nobody"])
    result = cli("status", cwd=repo.path)
    assert result.code == 0
    assert "daemon: not running" in result.out
    assert "tbl" in result.out and "nobody" in result.out


def test_stats_json_totals(repo: Repo, cli: Cli) -> None:
    repo.submit("s1", agent="json-agent", description="FAKE write a.txt x")
    repo.submit("s2", agent="json-agent", description="FAKE write b.txt x")
    repo.submit("s3", description="FAKE exit 1")
    repo.run_once()
    result = cli("stats", "--format", "json", cwd=repo.path)
    assert result.code == 0, result.err
    stats = json.loads(result.out)
    agents = {row["key"]: row for row in stats["agent"]}
    assert (agents["json-agent"]["invocations"], agents["json-agent"]["ok"]) == (2, 2)
    assert agents["json-agent"]["cost_usd"] == pytest.approx(0.025)
    assert (agents["json-agent"]["input"], agents["json-agent"]["output"]) == (2400, 680)
    assert (agents["backend-dev"]["invocations"], agents["backend-dev"]["ok"]) == (1, 0)
    assert {row["key"] for row in stats["tool"]} == {"fake", "fake-claude"}
    assert {row["key"] for row in stats["model"]} == {"fake-model-1", "-"}
    table = cli("stats", cwd=repo.path)
    assert table.code == 0 and "json-agent" in table.out


def test_stats_shows_review_rounds_reviewer_cost_and_acceptance_per_author_and_reviewer(repo: Repo,
                                                                                       cli: Cli) -> None:
    telemetry = Telemetry(repo.telemetry_db)

    def run(task: str, tool: str, role: str, cost: float, at: float) -> None:
        row = telemetry.start(InvocationStart(task, "dev", tool, None, 1, at, f"conveyor/{task}", role=role))
        telemetry.finish(row, InvocationEnd(at + 1, 1.0, "ok", cost_usd=cost))

    # r1: claude wrote, codex asked for changes, claude fixed, codex approved; merged
    for tool, role, cost in [("claude-code", "author", 1.0), ("codex", "reviewer", 0.25), ("claude-code", "fixer", 0.5),
                             ("codex", "reviewer", 0.25)]:
        run("r1", tool, role, cost, 1000.0)
    # r2: codex wrote, claude approved at once; closed without merge.  r3: never reviewed
    run("r2", "codex", "author", 1.0, 2000.0)
    run("r2", "claude-code", "reviewer", 0.5, 2000.0)
    run("r3", "codex", "author", 1.0, 3000.0)
    telemetry.record_outcome({"branch": "conveyor/r1", "task_id": "r1"}, "merged", 5000.0)
    telemetry.record_outcome({"branch": "conveyor/r2", "task_id": "r2"}, "closed", 5000.0)
    telemetry.close()

    result = cli("stats", "--format", "json", cwd=repo.path)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    by_reviewer = {row["key"]: row for row in data["review_by_reviewer"]}
    assert by_reviewer["codex"] == {"key": "codex", "tasks": 1, "reviews": 2, "review_cost_usd": 0.5, "fix_rounds": 1,
                                    "merged": 1, "closed": 0, "acceptance_rate": 1.0}
    assert by_reviewer["claude-code"]["reviews"] == 1 and by_reviewer["claude-code"]["acceptance_rate"] == 0.0
    by_author = {row["key"]: row for row in data["review_by_author"]}
    assert (by_author["claude-code"]["tasks"], by_author["codex"]["tasks"]) == (1, 1)   # r3 was never reviewed
    assert by_author["codex"]["review_cost_usd"] == 0.5
    table = cli("stats", "--by", "reviewer", cwd=repo.path)
    assert table.code == 0 and "Reviews by reviewer" in table.out and "codex" in table.out


def test_stats_refuses_a_newer_database(repo: Repo, cli: Cli) -> None:
    repo.telemetry_db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(repo.telemetry_db)
    conn.execute("PRAGMA user_version = 42")
    conn.close()
    result = cli("stats", cwd=repo.path)
    assert result.code == 1
    assert "newer Conveyor" in result.err and "Traceback" not in result.err


# ------------------------------------------------------------------ validation commands
def test_config_validate_reports_a_typo_with_file_and_line(repo: Repo, cli: Cli) -> None:
    repo.write_config("daemon.yaml", "base_branch: main\nmax_paralel: 3\n")
    result = cli("config", "validate", cwd=repo.path)
    assert result.code == 2
    path = repo.path / "config" / "daemon.yaml"
    assert f"error: {path}:2: field 'max_paralel': unknown key 'max_paralel'" in result.err
    assert "did you mean 'max_parallel'?" in result.err


def test_config_validate_ok_warns_about_missing_clis(repo: Repo, cli: Cli) -> None:
    result = cli("config", "validate", cwd=repo.path)
    assert result.code == 0, result.err
    assert "configuration OK" in result.out
    assert "conveyor-test-no-such-agent-cli" in result.out      # the ghost tool: a warning, not an error


def test_task_validate_exit_codes_and_messages(repo: Repo, cli: Cli) -> None:
    good = repo.submit("valid-one")
    bad = repo.drop("invalid-one.yaml", "id: other\nagent: dev\n")
    assert cli("task", "validate", str(good), cwd=repo.path).code == 0
    result = cli("task", "validate", str(good), str(bad), cwd=repo.path)
    assert result.code == 1
    assert f"error: {bad}:1: field 'id':" in result.out
    assert "2 file(s): 1 valid, 1 invalid" in result.out
    strict = cli("task", "validate", "--strict", str(repo.drop("warned.yaml", "id: warned\nagent: dev\n")),
                 cwd=repo.path)
    assert strict.code == 1 and "artefacts" in strict.out


def test_task_validate_checks_the_board_format(repo: Repo, cli: Cli) -> None:
    path = repo.drop("format.yaml", "id: format\nagent: dev\nartefacts: []\nstatus: blocked\n"
                                    "created_at: '2026-11-23 09:00'\n")
    done = repo.drop("finished.yaml", "id: finished\nagent: dev\nartefacts: []\nstatus: done\n")
    result = cli("task", "validate", str(path), str(done), cwd=repo.path)
    assert result.code == 0                                       # format problems are warnings...
    assert f"warning: {path}:4: field 'status': 'blocked' is not a documented status" in result.out
    assert f"warning: {path}:5: field 'created_at':" in result.out and "2026-11-23T09:00:00Z" in result.out
    assert f"warning: {done}: field 'result': is missing on a done task" in result.out
    assert cli("task", "validate", "--strict", str(path), cwd=repo.path).code == 1   # ...unless --strict


def test_doctor_runs_and_reports(repo: Repo, cli: Cli) -> None:
    result = cli("doctor", cwd=repo.path)
    assert result.code == 0, result.out + result.err
    assert re.search(r"^✔ git\s+git (version )?\d", result.out, re.MULTILINE)
    assert re.search(r"^✔ base branch\s+main", result.out, re.MULTILINE)
    assert re.search(r"^! tool ghost\s+.*not on PATH", result.out, re.MULTILINE)
    assert re.search(r"^✔ tool fake\s+.*fake-agent — fake-agent 1\.0", result.out, re.MULTILINE)
    # issue 16: a tool without version_argv is never run by doctor just to ask its version
    assert re.search(r"^✔ tool fake-claude\s+.*version not asked", result.out, re.MULTILINE)
    assert re.search(r"^✔ agents can run\s+on fake", result.out, re.MULTILINE)


def test_doctor_fails_on_a_broken_config(repo: Repo, cli: Cli) -> None:
    repo.write_config("agents.yaml", "agents:\n  default: {tool: fkae}\n")
    result = cli("doctor", cwd=repo.path)
    assert result.code == 1
    assert "✘ config" in result.out and "did you mean 'fake'?" in result.out


def test_logs_prints_the_agents_output(repo: Repo, cli: Cli) -> None:
    repo.write_config("daemon.yaml", DAEMON_YAML + "privacy: full\n")     # metadata mode keeps no transcript
    repo.submit("logged", description="FAKE say hello from the log")
    repo.run_once()
    result = cli("logs", "logged", cwd=repo.path)
    assert result.code == 0
    assert "fake agent: hello from the log" in result.out
    assert cli("logs", "never-ran", cwd=repo.path).code == 1


# ------------------------------------------------------------------ --repo and a real subprocess
def test_repo_option_works_from_another_directory(repo: Repo, tmp_path: Path, cli: Cli) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    repo.submit("remote-view")
    result = cli("status", "--format", "json", "--repo", str(repo.path), cwd=elsewhere)
    assert result.code == 0, result.err
    assert [item["id"] for item in json.loads(result.out)["queued"]] == ["remote-view"]
    outside = cli("status", cwd=elsewhere)
    assert outside.code == 1 and "not inside a git repository" in outside.err and "--repo" in outside.err


def test_the_repository_is_found_from_a_subdirectory(repo: Repo, cli: Cli) -> None:
    result = cli("submit", "--agent", "dev", "--title", "from below", "--id", "below", cwd=repo.inbox)
    assert result.code == 0, result.err
    assert (repo.inbox / "below.yaml").exists()


def test_run_once_as_a_real_process(repo: Repo, tmp_path: Path, conveyor_cli: ConveyorCli) -> None:
    repo.submit("subprocess-task", description="FAKE write sp.txt x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = conveyor_cli("run", "--once", "--repo", str(repo.path), "--json-logs", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stderr.splitlines() if line.startswith("{")]
    assert "daemon.idle_exit" in events
    assert repo.done_doc("subprocess-task")["status"] == "done"
    assert git(repo.path, "show", "conveyor/subprocess-task:sp.txt") == "x"


def test_a_second_run_is_refused_while_a_daemon_holds_the_lock(repo: Repo, conveyor_cli: ConveyorCli) -> None:
    with DaemonLock(repo.git_dir / "conveyor" / "daemon.lock"):
        done = conveyor_cli("run", "--once", cwd=repo.path)
    assert done.returncode == 1
    assert f"another Conveyor daemon (pid {os.getpid()})" in done.stderr


def test_version_and_help(repo: Repo, cli: Cli) -> None:
    assert cli("--version", cwd=repo.path).out.startswith("conveyor, version ")
    result = cli("--help", cwd=repo.path)
    assert result.code == 0
    for command in ("init", "run", "submit", "status", "task", "stats", "config", "doctor"):
        assert re.search(rf"^\s+{command}\b", result.out, re.MULTILINE), command


def test_read_only_commands_do_not_load_gitpython(repo: Repo) -> None:
    """`stats` and `status` only ask git for the repository root (a plain `git rev-parse`); importing
    GitPython would add ~60 ms to every call, which `conveyor stats` in a shell prompt or a status bar feels."""
    probe = ("import sys, runpy\n"
             "sys.argv = ['conveyor', sys.argv[1], '--format', 'json']\n"
             "try:\n    runpy.run_module('conveyor', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print('LOADED' if type(sys.modules.get('git')).__name__ == 'module' else 'LAZY', file=sys.stderr)\n")
    for command in ("stats", "status"):
        done = subprocess.run([sys.executable, "-c", probe, command], cwd=repo.path, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip().endswith("LAZY"), (command, done.stderr)
