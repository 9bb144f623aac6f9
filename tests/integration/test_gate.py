"""The completion gate through the daemon: empty diffs, protected paths, secrets, and verify commands whose
failure goes back to the agent by resuming its session, with real git and a scripted agent CLI."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.gate_support import Project, make_project, python_check
from tests.support.agent_script import act, resuming, work
from tests.support.fake_github import FakeGitHub

GREETING_CHECK = python_check("import sys; t = open('greeting.txt').read(); print('greeting.txt says:', t.strip()); "
                              "sys.exit(0 if t == 'hello world\\n' else 1)")
TYPO = work({"greeting.txt": "hello wrold\n"}, "Wrote the greeting")
FIXED = work({"greeting.txt": "hello world\n"}, "Fixed the typo")


@pytest.fixture
def published(tmp_path: Path, github: FakeGitHub) -> Project:
    return make_project(tmp_path, with_remote=True, github=github)


@pytest.fixture
def local(tmp_path: Path) -> Project:
    return make_project(tmp_path, with_remote=False)


def done(project: Project, task_id: str) -> dict[str, Any]:
    return project.repo.done_doc(task_id)


# ------------------------------------------------------------------ verify, resumed
def test_a_verify_failure_resumes_the_agents_session_and_the_fix_passes(local: Project) -> None:
    local.configure(verify=[GREETING_CHECK])
    told = [act("expect-prompt", text=text)
            for text in ("greeting.txt says: hello wrold", "failed (exit code 1)", GREETING_CHECK)]
    local.script("t-fix", TYPO, [resuming("session-t-fix"), *told, *FIXED])
    local.repo.submit("t-fix", description="Write a greeting")
    local.run()

    document = done(local, "t-fix")
    assert document["status"] == "done", document.get("error")
    result = document["result"]
    assert result["verify_rounds"] == 1
    assert local.repo.git("show", f"{result['commit']}:greeting.txt") == "hello world"
    resumed = local.invocations("t-fix")[1]
    assert resumed["resume"] == "session-t-fix" and "--resume" in resumed["argv"]
    assert "Fixed the typo" in result["summary"] and "Wrote the greeting" in result["summary"]
    verify = [check for check in result["checks"] if check["check"].startswith("verify: ")]
    assert verify == [{"check": f"verify: {GREETING_CHECK}", "result": "passed", "detail": verify[0]["detail"]}]
    rows = local.repo.rows("t-fix")
    assert [(row["attempt"], row["round"], row["outcome"]) for row in rows] == [(1, 0, "ok"), (1, 1, "ok")]
    assert rows[1]["commit_sha"] == result["commit"]
    assert result["tokens"]["input"] == 2400 and result["cost_usd"] == pytest.approx(0.025)
    assert (result["pr_url"], result["publish"]) == (None, "local branch only (remote.name is null)")


def test_verify_failing_every_round_fails_the_task_with_the_output_tail(local: Project) -> None:
    local.configure(verify=[GREETING_CHECK], verify_rounds=2)
    local.script("t-stuck", TYPO, [resuming("session-t-stuck"), *TYPO], [resuming("session-t-stuck"), *TYPO])
    local.repo.submit("t-stuck", description="Write a greeting")
    local.run()

    document = done(local, "t-stuck")
    assert document["status"] == "error"
    error = document["error"]
    assert error["kind"] == "verify"
    assert error["message"] == f"verify command `{GREETING_CHECK}` failed (exit code 1) after 2 fix round(s)"
    assert "greeting.txt says: hello wrold" in error["output_tail"]
    assert "result" not in document
    assert [row["round"] for row in local.repo.rows("t-stuck")] == [0, 1, 2]
    assert {row["attempt"] for row in local.repo.rows("t-stuck")} == {1}
    assert "conveyor/t-stuck" not in local.repo.branches()
    assert local.repo.worktrees() == [str(local.repo.path)]


def test_a_hard_budget_spent_by_the_first_run_allows_no_fix_round(local: Project) -> None:
    """A fix round is new spend: once the run itself has used up a hard budget, the failing work is not
    sent back to the agent; the task fails saying which budget stopped it."""
    local.configure(verify=[GREETING_CHECK], verify_rounds=2)
    local.repo.write_config("policies.yaml", "budgets:\n  - {scope: global, period: daily, usd: 0.01, limit: hard}\n")
    local.script("t-broke", TYPO, [resuming("session-t-broke"), *FIXED])
    local.repo.submit("t-broke", description="Write a greeting")
    run = local.run()

    error = done(local, "t-broke")["error"]
    assert error["kind"] == "verify"
    assert error["message"].startswith(f"verify command `{GREETING_CHECK}` failed (exit code 1); no fix round: "
                                       "global daily budget of $0.01 reached ($0.01 spent, hard limit)")
    assert [row["round"] for row in local.repo.rows("t-broke")] == [0]
    assert len(local.invocations("t-broke")) == 1
    assert run.events("verify.no_fix_round")[0]["task_id"] == "t-broke"


def test_a_cli_without_sessions_gets_the_failure_in_a_fresh_run(local: Project) -> None:
    local.configure(verify=[GREETING_CHECK])
    told = [act("expect-prompt", text=text)
            for text in ("# Task t-plain", "failed verification", "greeting.txt says: hello wrold")]
    local.script("t-plain", TYPO, [resuming(None), *told, *FIXED])
    local.repo.submit("t-plain", agent="plain-agent", description="Write a greeting")
    local.run()
    document = local.repo.done_doc("t-plain", agent="plain-agent")
    assert document["status"] == "done", document.get("error")
    assert document["result"]["verify_rounds"] == 1


def test_configured_then_task_verify_commands_run_and_a_shell_is_spelled_out(local: Project) -> None:
    local.configure(verify=["sh -c 'ls | grep -q greeting.txt'"])
    local.script("t-both", FIXED)
    local.repo.submit("t-both", description="Write a greeting", verify=[GREETING_CHECK])
    local.run()
    checks = done(local, "t-both")["result"]["checks"]
    assert [(c["check"], c["result"]) for c in checks] == [
        ("changes", "passed"), ("allowed paths", "passed"), ("secret scan", "passed"),
        ("verify: sh -c 'ls | grep -q greeting.txt'", "passed"), (f"verify: {GREETING_CHECK}", "passed")]


def test_a_verify_command_that_cannot_start_fails_the_task(local: Project) -> None:
    local.configure(verify=["/nonexistent/conveyor-check --all"], verify_rounds=0)
    local.script("t-nocmd", FIXED)
    local.repo.submit("t-nocmd", description="Write a greeting")
    local.run()
    error = done(local, "t-nocmd")["error"]
    assert error["kind"] == "verify_setup"     # issue 16: a set-up problem, found before the agent starts
    assert "no agent was started" in error["message"] and "/nonexistent/conveyor-check" in error["message"]
    assert "conveyor task retry t-nocmd" in error["message"]
    assert len(local.invocations("t-nocmd")) == 0        # no agent round spent on what no agent can fix


def test_a_task_verify_command_that_cannot_be_split_fails_the_task(local: Project) -> None:
    local.script("t-quote", FIXED)
    local.repo.submit("t-quote", description="Write a greeting", verify=["pytest -k 'unclosed"])
    local.run()
    error = done(local, "t-quote")["error"]
    assert error["kind"] == "verify_setup" and "close the quotes" in error["message"]
    assert len(local.invocations("t-quote")) == 0


def test_the_fix_round_ending_in_an_error_fails_the_task(local: Project) -> None:
    local.configure(verify=[GREETING_CHECK])
    local.script("t-broke", TYPO, [resuming(None), *FIXED])     # the expectation fails: agent error
    local.repo.submit("t-broke", description="Write a greeting")
    local.run()
    error = done(local, "t-broke")["error"]
    assert error["kind"] == "verify"
    assert "fix round 1 ended with agent_error" in error["message"]
    assert "greeting.txt says: hello wrold" in error["output_tail"]


# ------------------------------------------------------------------ empty diffs
def test_no_changes_fail_unless_the_task_expects_none(local: Project) -> None:
    local.script("t-idle", work({}, "Everything is already in place"))
    local.script("t-fine", work({}, "Nothing needed"))
    local.repo.submit("t-idle", description="Check things")
    local.repo.submit("t-fine", description="Check things", expect_changes=False)
    local.run()
    idle = done(local, "t-idle")
    assert idle["status"] == "error" and idle["error"]["kind"] == "no_changes"
    assert "expect_changes: false" in idle["error"]["message"]
    assert idle["error"]["agent_summary"] == "Everything is already in place"
    fine = done(local, "t-fine")
    assert fine["status"] == "done" and fine["result"]["summary"] == "no changes"
    assert "conveyor/t-idle" not in local.repo.branches() and "conveyor/t-fine" not in local.repo.branches()


# ------------------------------------------------------------------ protected paths
@pytest.mark.parametrize("path", ["work/collaboration/inbox/sneaky.yaml", "ROADMAP.md", "docs/roadmap.md",
                                  "work/collaboration/done/backend-dev/other.yaml"])
def test_edits_to_the_board_or_a_roadmap_are_blocked(local: Project, path: str) -> None:
    local.script("t-sneak", work({"src/ok.py": "x = 1\n", path: "status: done\n"}))
    local.repo.submit("t-sneak", description="Do the work")
    local.run()
    error = done(local, "t-sneak")["error"]
    assert error["kind"] == "paths"
    assert f"  {path}: " in error["message"] and "src/ok.py" not in error["message"]
    assert "conveyor/t-sneak" not in local.repo.branches()
    assert not (local.repo.path / "work" / "collaboration" / "inbox" / "sneaky.yaml").exists()


def test_allowed_paths_from_the_task_limit_the_change(local: Project) -> None:
    local.script("t-scope", work({"src/app.py": "x = 1\n", "README.md": "rewritten\n"}))
    local.repo.submit("t-scope", description="Only src", allowed_paths=["src/**"])
    local.run()
    error = done(local, "t-scope")["error"]
    assert error["kind"] == "paths"
    assert "README.md: is outside the paths this task may change" in error["message"]


# ------------------------------------------------------------------ secrets
_RNG = random.Random(4242)


def _rand(alphabet: str, length: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(length))


AWS_KEY_ID = "AKIA" + _rand(string.ascii_uppercase + string.digits, 16)
GITHUB_TOKEN = "ghp" + "_" + _rand(string.ascii_letters + string.digits, 36)
KEY_LINES = [_rand(string.ascii_letters + string.digits + "+/", 64) for _ in range(3)]
PRIVATE_KEY = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *KEY_LINES, "-----END RSA PRIVATE KEY-----", ""])
SECRETS = [AWS_KEY_ID, GITHUB_TOKEN, *KEY_LINES]


def _everything_written(project: Project, logs: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """Every place the daemon writes: the task file, the telemetry database (and WAL), logs and state."""
    state = project.repo.git_dir / "conveyor"
    files = [path for path in state.rglob("*") if path.is_file()]
    files += [path for path in project.repo.board.rglob("*") if path.is_file()]
    found = [(str(path), path.read_bytes()) for path in files]
    found.append(("captured log events", json.dumps(logs, default=str).encode()))
    return found


def test_planted_secrets_block_the_commit_and_are_never_written_anywhere(published: Project,
                                                                         github: FakeGitHub) -> None:
    config_py = f"REGION = 'eu-west-1'\nAWS_ACCESS_KEY_ID = '{AWS_KEY_ID}'\n"
    published.script("t-leak", work({"src/config.py": config_py, "deploy/token.txt": GITHUB_TOKEN + "\n",
                                      "keys/id_rsa": PRIVATE_KEY, "src/app.py": "print('hi')\n"},
                                     f"Configured deployment with token {GITHUB_TOKEN}"))
    published.repo.submit("t-leak", description="Set up deployment")
    run = published.run()

    error = done(published, "t-leak")["error"]
    assert error["kind"] == "secrets"
    message = error["message"]
    assert "src/config.py:2: AWS Access Key" in message
    assert "deploy/token.txt:1: GitHub Token" in message
    assert "keys/id_rsa:1: Private Key" in message
    assert "src/app.py" not in message
    for where, data in _everything_written(published, run.logs):
        for secret in SECRETS:
            assert secret.encode() not in data, f"a planted secret reached {where}"
    assert "conveyor/t-leak" not in published.repo.branches()
    assert published.remote_branches() == ["main"]
    assert github.requests == []


def test_a_secret_in_the_agents_summary_is_withheld_from_result_and_commit(local: Project) -> None:
    local.script("t-chatty", work({"src/app.py": "print('hi')\n"}, f"Used token {GITHUB_TOKEN}"))
    local.repo.submit("t-chatty", description="Say hi")
    local.run()
    result = done(local, "t-chatty")["result"]
    assert result["summary"].startswith("(withheld: the text looked like it contains a secret (GitHub Token)")
    assert GITHUB_TOKEN not in local.repo.git("log", "-1", "--format=%B", "conveyor/t-chatty")
    assert GITHUB_TOKEN not in local.repo.done_path("t-chatty").read_text()


# ------------------------------------------------------------------ hand-off
def test_handoff_lines_become_result_fields(local: Project) -> None:
    said = ("Added the endpoint.\n\n**NEXT_AGENT:** qa-engineer\nNEXT_TASK_TITLE: Test the endpoint\n"
            "NEXT_TASK_NOTES: cover the error path\nand the empty body")
    local.script("t-hand", work({"src/api.py": "x = 1\n"}, said))
    local.repo.submit("t-hand", description="Add an endpoint")
    local.run()
    result = done(local, "t-hand")["result"]
    assert (result["next_agent"], result["next_task_title"]) == ("qa-engineer", "Test the endpoint")
    assert result["next_task_notes"] == "cover the error path\nand the empty body"


def test_the_result_block_is_valid_yaml_with_the_checks(local: Project) -> None:
    local.script("t-yaml", FIXED)
    local.repo.submit("t-yaml", description="Write a greeting")
    local.run()
    text = local.repo.done_path("t-yaml").read_text()
    assert yaml.safe_load(text)["result"]["checks"][2]["detail"].endswith("nothing found")
