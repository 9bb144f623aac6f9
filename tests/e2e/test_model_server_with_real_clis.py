"""The real pinned `claude` and `codex` CLIs against the scripted fake model server, in a real git repo.

These prove the fake model is faithful enough for the daemon's end-to-end tests: the CLI really writes
the file the script asks for, reports the usage the server sent, retries and fails the way
docs/agent-clis.md says, and prints output with the same shape as the captured fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.runner.types import Tokens
from tests.conftest import FIXTURES
from tests.e2e.conftest import CliRun, base_env, outbound_attempts, run_cli
from tests.support.model_server import Fail, Hang, ModelServer, Reply, RunCommand, Stall, WriteFile

pytestmark = pytest.mark.e2e

AGENT_OUTPUT = FIXTURES / "agent-output"
CLAUDE_MODEL = "claude-sonnet-4-5"
CODEX_MODEL = "gpt-5.5"
TASK = "2026-11-23T0900-backend-dev-hello"
PROMPT = f"Task {TASK}: add hello.py with a greet(name) function. Do not commit."
HELLO = 'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'


def claude_argv(exe: Path, output_format: str, model: str | None = CLAUDE_MODEL) -> list[str]:
    verbose = ["--verbose"] if output_format == "stream-json" else []
    chosen = ["--model", model] if model else []
    return [str(exe), "-p", PROMPT, "--output-format", output_format, *verbose,
            "--permission-mode", "acceptEdits", *chosen]


def codex_argv(exe: Path) -> list[str]:
    return [str(exe), "exec", "--json", "--sandbox", "workspace-write", "-m", CODEX_MODEL, PROMPT]


def save(tmp_path: Path, name: str, run: CliRun) -> Path:
    """Keep the captured stdout beside the test's other files (useful when a shape check fails)."""
    path = tmp_path / name
    path.write_text(run.stdout, encoding="utf-8")
    return path


def fixture_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (AGENT_OUTPUT / name).read_text().splitlines() if line.strip()]


def event_kinds(events: list[dict[str, Any]]) -> set[tuple[str, str | None]]:
    return {(event["type"], event.get("subtype")) for event in events}


def scripted_requests(server: ModelServer) -> list[tuple[str, str | None]]:
    return [(request.path, request.step) for request in server.requests if request.conversation is not None]


# ----------------------------------------------------------------------------------------------- claude
# The default model (claude-opus-5-5 on 2.1.328) sends its environment, cwd included, in a "system" role
# message; claude-sonnet-4-5 sends it in the first user message. The fake must find it in both.
@pytest.mark.parametrize("model", [CLAUDE_MODEL, None], ids=["sonnet-4-5", "default-model"])
def test_claude_json_writes_the_file_and_reports_the_servers_usage(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, claude_env: dict[str, str],
        git_repo: Path, tmp_path: Path, model: str | None) -> None:
    model_server.add_script(TASK, [WriteFile("src/hello.py", HELLO, usage=Tokens(1200, 80, 300, 40)),
                                   Reply("Created src/hello.py", usage=Tokens(150, 20, 1500, 0))])

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "json", model), git_repo, claude_env, timeout=60)

    assert run.returncode == 0, run.stderr
    result = json.loads(save(tmp_path, "claude.json", run).read_text())
    assert (git_repo / "src" / "hello.py").read_text() == HELLO
    assert (result["is_error"], result["result"], result["num_turns"]) == (False, "Created src/hello.py", 2)
    assert [step for _, step in scripted_requests(model_server)] == ["WriteFile", "Reply"]
    reported = model_server.reported_usage(TASK)
    assert reported == Tokens(1350, 100, 1800, 40)
    assert result["usage"]["input_tokens"] == reported.input
    assert result["usage"]["output_tokens"] == reported.output
    assert result["usage"]["cache_read_input_tokens"] == reported.cache_read
    assert result["usage"]["cache_creation_input_tokens"] == reported.cache_write
    fixture = json.loads((AGENT_OUTPUT / "claude-2.1.328-json-success.json").read_text())
    assert set(result) == set(fixture)
    assert set(result["usage"]) == set(fixture["usage"])
    assert outbound_attempts(model_server) == []


def test_claude_sends_every_agent_request_with_tools_to_the_beta_messages_path(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, claude_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [WriteFile("hello.py", HELLO), Reply("done")])

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "json"), git_repo, claude_env, timeout=60)

    assert run.returncode == 0, run.stderr
    assert scripted_requests(model_server) == [("/v1/messages?beta=true", "WriteFile"),
                                               ("/v1/messages?beta=true", "Reply")]
    first = model_server.requests[0]
    assert first.has_tools and {"Write", "Bash"} <= {tool["name"] for tool in first.body["tools"]}
    assert first.headers["x-api-key"] == "<redacted>"
    assert {r.session for r in model_server.requests} == {json.loads(run.stdout)["session_id"]}
    assert f"Primary working directory: {git_repo}" in json.dumps(first.body["messages"][0])


def test_claude_stream_json_has_the_fixtures_shape(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, claude_env: dict[str, str],
        git_repo: Path, tmp_path: Path) -> None:
    model_server.add_script(TASK, [WriteFile("hello.py", HELLO), Reply("Created hello.py")])

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "stream-json"), git_repo, claude_env, timeout=60)

    assert run.returncode == 0, run.stderr
    save(tmp_path, "claude-stream.jsonl", run)
    events = run.json_lines()
    fixture = fixture_lines("claude-2.1.328-stream-json-529-retries-then-success.jsonl")
    assert events[0]["type"] == "system" and events[0]["subtype"] == "init"
    assert events[0]["cwd"] == str(git_repo)
    assert set(events[0]) == set(fixture[0])
    assert {("system", "init"), ("assistant", None), ("user", None), ("result", "success")} <= event_kinds(events)
    assert set(events[-1]) == set(fixture[-1])
    assert (git_repo / "hello.py").read_text() == HELLO


def test_claude_retries_529_twice_then_succeeds(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, agent_home: Path, git_repo: Path) -> None:
    model_server.add_script(TASK, [Fail(529), Fail(529), Reply("ok")])
    env = {**base_env(model_server), **model_server.claude_env(agent_home, max_retries=2)}

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "stream-json"), git_repo, env, timeout=60)

    assert run.returncode == 0, run.stderr
    events = run.json_lines()
    retries = [e for e in events if e.get("subtype") == "api_retry"]
    assert [(e["attempt"], e["error_status"], e["error"]) for e in retries] == [(1, 529, "overloaded"),
                                                                                 (2, 529, "overloaded")]
    assert (events[-1]["is_error"], events[-1]["result"]) == (False, "ok")
    assert [step for _, step in scripted_requests(model_server)] == ["Fail", "Fail", "Reply"]
    fixture_retry = next(e for e in fixture_lines("claude-2.1.328-stream-json-529-retries-then-success.jsonl")
                         if e.get("subtype") == "api_retry")
    assert set(retries[0]) == set(fixture_retry)


def test_claude_429_with_one_retry_ends_in_an_api_error(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, claude_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Fail(429, "Rate limited", headers={"retry-after": "1"})])

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "json"), git_repo, claude_env, timeout=30)

    assert run.returncode == 1
    result = json.loads(run.stdout)
    assert (result["is_error"], result["api_error_status"], result["terminal_reason"]) == (True, 429, "api_error")
    assert [step for _, step in scripted_requests(model_server)] == ["Fail", "Fail"]


def test_claude_hung_model_yields_no_result(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, claude_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Hang()])

    run = run_cli(claude_argv(agent_cli_paths["claude-code"], "json"), git_repo, claude_env, timeout=4)

    assert run.killed
    assert run.stdout == ""
    assert [step for _, step in scripted_requests(model_server)] == ["Hang"]


# ------------------------------------------------------------------------------------------------ codex
def test_codex_writes_the_file_and_reports_the_servers_usage(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path, tmp_path: Path) -> None:
    model_server.add_script(TASK, [WriteFile("src/hello.py", HELLO, usage=Tokens(1200, 80, 300, 40)),
                                   Reply("Created src/hello.py", usage=Tokens(150, 20, 1500, 0))])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=60)

    assert run.returncode == 0, run.stderr
    save(tmp_path, "codex.jsonl", run)
    events = run.json_lines()
    assert (git_repo / "src" / "hello.py").read_text() == HELLO
    reported = model_server.reported_usage(TASK)
    usage = events[-1]["usage"]
    assert events[-1]["type"] == "turn.completed"
    assert usage["input_tokens"] == reported.input + reported.cache_read  # OpenAI counts cached input inside
    assert usage["cached_input_tokens"] == reported.cache_read
    assert usage["cache_write_input_tokens"] == reported.cache_write
    assert usage["output_tokens"] == reported.output
    messages = [e["item"]["text"] for e in events if e.get("item", {}).get("type") == "agent_message"]
    assert messages == ["Created src/hello.py"]
    fixture = fixture_lines("codex-0.169.0-jsonl-success-command.jsonl")
    assert {e["type"] for e in events} == {e["type"] for e in fixture}
    assert set(usage) == set(fixture[-1]["usage"])
    assert outbound_attempts(model_server) == []


def test_codex_sends_the_classic_tools_and_states_its_cwd(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [RunCommand("printf ran > ran.txt"), Reply("done")])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=60)

    assert run.returncode == 0, run.stderr
    assert (git_repo / "ran.txt").read_text() == "ran"
    assert scripted_requests(model_server) == [("/v1/responses", "RunCommand"), ("/v1/responses", "Reply")]
    first = model_server.requests[0]
    assert {"exec_command", "apply_patch"} <= {tool.get("name") for tool in first.body["tools"]}
    assert f"<cwd>{git_repo}</cwd>" in json.dumps(first.body["input"])
    assert first.headers["authorization"] == "<redacted>"
    assert {r.session for r in model_server.requests} == {run.json_lines()[0]["thread_id"]}


def test_codex_retries_a_500_then_succeeds(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Fail(500), Reply("ok")])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=60)

    assert run.returncode == 0, run.stderr
    assert run.json_lines()[-1]["type"] == "turn.completed"
    assert [step for _, step in scripted_requests(model_server)] == ["Fail", "Reply"]


def test_codex_gives_up_on_a_lasting_500_after_its_bounded_retries(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Fail(500)])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=60)

    assert run.returncode == 1
    events = run.json_lines()
    assert next(e["message"] for e in events if e["type"] == "error").startswith("Reconnecting... 1/1 (")
    assert events[-1]["type"] == "turn.failed"
    # (request_max_retries + 1) x (stream_max_retries + 1): each stream retry re-runs the request retries
    assert [step for _, step in scripted_requests(model_server)] == ["Fail"] * 4
    assert {e["type"] for e in events} <= {e["type"] for e in fixture_lines("codex-0.169.0-jsonl-500.jsonl")}


def test_codex_429_with_one_retry_fails_the_turn(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Fail(429, "Rate limit reached")])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=60)

    assert run.returncode == 1
    events = run.json_lines()
    assert events[-1]["type"] == "turn.failed"
    assert "429" in events[-1]["error"]["message"]
    assert [step for _, step in scripted_requests(model_server)] == ["Fail"]  # codex never retries a 429
    assert {e["type"] for e in events} <= {e["type"] for e in fixture_lines("codex-0.169.0-jsonl-429.jsonl")}


def test_codex_stalled_stream_ends_with_an_idle_timeout(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, agent_home: Path, git_repo: Path) -> None:
    model_server.add_script(TASK, [Stall()])
    codex_home = agent_home / ".codex"
    model_server.write_codex_config(codex_home, retries=0, stream_idle_timeout_ms=1000)
    env = {**base_env(model_server), **model_server.codex_env(codex_home, agent_home)}

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, env, timeout=30)

    assert run.returncode == 1
    assert "idle timeout" in run.json_lines()[-1]["error"]["message"]


def test_codex_hung_model_yields_no_turn_result(
        agent_cli_paths: dict[str, Path], model_server: ModelServer, codex_env: dict[str, str],
        git_repo: Path) -> None:
    model_server.add_script(TASK, [Hang()])

    run = run_cli(codex_argv(agent_cli_paths["codex"]), git_repo, codex_env, timeout=4)

    assert run.killed
    assert not {"turn.completed", "turn.failed"} & {e["type"] for e in run.json_lines()}
