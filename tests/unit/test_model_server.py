"""The fake model server, driven with a plain HTTP client on 127.0.0.1 (no agent CLI involved)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO_ROOT
from tests.support.model_script import user_text, working_directory
from tests.support.model_server import (
    Fail,
    Hang,
    ModelServer,
    Reply,
    RunCommand,
    Stall,
    WriteFile,
    claude_env,
    demo_script,
    write_codex_config,
)
from tests.support.model_wire import anthropic_usage, shell_write_command

from conveyor.runner.types import Tokens

CWD = "/work/agent/repo"


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer() as running:
        yield running


def claude_body(text: str, *, tools: tuple[str, ...] = ("Bash", "Write"), stream: bool = True,
                cwd: str | None = CWD) -> dict[str, Any]:
    """Shaped like claude 2.1.328's requests: the cwd sits in a system-reminder of the first user message."""
    content = [{"type": "text", "text": text}]
    if cwd:
        content.insert(0, {"type": "text", "text": f"<system-reminder>\n - Primary working directory: {cwd}\n"})
    return {"model": "claude-sonnet-4-5", "stream": stream, "system": [{"type": "text", "text": "You are..."}],
            "tools": [{"name": name, "input_schema": {"type": "object"}} for name in tools],
            "messages": [{"role": "user", "content": content}]}


def codex_body(text: str) -> dict[str, Any]:
    return {"model": "gpt-5.5", "stream": True, "tools": [{"type": "function", "name": "exec_command"}],
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "dev"}]},
                      {"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": f"<environment_context>\n  <cwd>{CWD}</cwd>"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]}


def request(server: ModelServer, method: str, path: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"content-type": "application/json",
                                                                **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def claude_call(server: ModelServer, text: str, **kwargs: Any) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    status, _, raw = request(server, "POST", "/v1/messages?beta=true", claude_body(text, **kwargs))
    return status, sse(raw) if status == 200 else []


def tool_input(events: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The tool name and the input a client rebuilds from `content_block_start` + `input_json_delta`s."""
    start = next(data for name, data in events if name == "content_block_start")
    partial = "".join(data["delta"]["partial_json"] for name, data in events if name == "content_block_delta")
    return start["content_block"]["name"], json.loads(partial)


# --------------------------------------------------------------------------------------- anthropic API
def test_write_file_streams_a_write_tool_call_at_the_absolute_path(server: ModelServer) -> None:
    usage = Tokens(input=1200, output=80, cache_read=300, cache_write=40)
    server.add_script("T-1", [WriteFile("src/app.py", "print('hi')\n", usage=usage), Reply("done")])

    status, events = claude_call(server, "T-1: do it")

    assert status == 200
    assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                            "content_block_stop", "message_delta", "message_stop"]
    assert tool_input(events) == ("Write", {"file_path": f"{CWD}/src/app.py", "content": "print('hi')\n"})
    delta = dict(events)["message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == anthropic_usage(usage)
    assert dict(events)["message_start"]["message"]["usage"]["input_tokens"] == 1200


def test_reply_streams_text_and_ends_the_turn(server: ModelServer) -> None:
    server.add_script("T-1", [Reply("All done.")])

    _, events = claude_call(server, "T-1")

    assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == ["All done."]
    assert dict(events)["message_delta"]["delta"]["stop_reason"] == "end_turn"


def test_non_streaming_request_gets_one_message_object(server: ModelServer) -> None:
    server.add_script("T-1", [Reply("plain")])

    status, headers, raw = request(server, "POST", "/v1/messages", claude_body("T-1", stream=False))

    message = json.loads(raw)
    assert (status, headers["content-type"]) == (200, "application/json")
    assert (message["type"], message["content"], message["stop_reason"]) == (
        "message", [{"type": "text", "text": "plain"}], "end_turn")


def test_run_command_is_a_bash_tool_call(server: ModelServer) -> None:
    server.add_script("T-1", [RunCommand("make test")])

    _, events = claude_call(server, "T-1")

    assert tool_input(events) == ("Bash", {"command": "make test", "description": "Run a command"})


def test_write_file_falls_back_to_bash_when_write_is_not_offered(server: ModelServer, tmp_path: Path) -> None:
    content = "it's \"quoted\" $HOME `x`\n"
    server.add_script("T-1", [WriteFile("deep/er/notes.txt", content)])

    _, events = claude_call(server, "T-1", tools=("Bash", "Read"), cwd=str(tmp_path))
    name, arguments = tool_input(events)
    subprocess.run(["bash", "-c", arguments["command"]], cwd=tmp_path, check=True)

    assert name == "Bash"
    assert (tmp_path / "deep" / "er" / "notes.txt").read_text() == content


def test_write_file_without_a_stated_cwd_uses_bash_in_the_cwd(server: ModelServer, tmp_path: Path) -> None:
    server.add_script("T-1", [WriteFile("sub/a.txt", "x\n")])

    _, events = claude_call(server, "T-1", cwd=None)
    name, arguments = tool_input(events)
    subprocess.run(["bash", "-c", arguments["command"]], cwd=tmp_path, check=True)

    assert name == "Bash"
    assert (tmp_path / "sub" / "a.txt").read_text() == "x\n"


def test_write_file_with_neither_cwd_nor_bash_is_refused_with_a_final_400(server: ModelServer) -> None:
    server.add_script("T-1", [WriteFile("a.txt", "x")])

    status, headers, raw = request(server, "POST", "/v1/messages", claude_body("T-1", cwd=None, tools=("Write",)))

    assert (status, headers["x-should-retry"]) == (400, "false")
    assert "states no working directory and offers no Bash tool" in json.loads(raw)["error"]["message"]


def test_requests_without_tools_are_side_requests_that_do_not_consume_steps(server: ModelServer) -> None:
    server.add_script("T-1", [Reply("first"), Reply("second")])
    side = {**claude_body("T-1: title please"), "tools": []}

    status, _, raw = request(server, "POST", "/v1/messages", side)
    _, events = claude_call(server, "T-1")

    assert status == 200 and sse(raw)[0][0] == "message_start"
    assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == ["first"]
    assert [r.step for r in server.requests] == ["side", "Reply"]
    assert server.reported_usage("T-1") == Reply("x").usage


def test_each_request_serves_the_next_step_so_retries_see_the_next_one(server: ModelServer) -> None:
    server.add_script("T-1", [Fail(529), Fail(529), Reply("ok")])

    statuses = [claude_call(server, "T-1")[0] for _ in range(3)]

    assert statuses == [529, 529, 200]


def test_fail_sends_the_providers_error_body_and_headers(server: ModelServer) -> None:
    headers = {"retry-after": "7", "anthropic-ratelimit-requests-reset": "2026-11-23T10:00:00Z"}
    server.add_script("T-1", [Fail(429, "Number of requests has exceeded your rate limit", headers=headers)])

    status, got, raw = request(server, "POST", "/v1/messages?beta=true", claude_body("T-1"))

    assert status == 429
    assert got["retry-after"] == "7" and got["anthropic-ratelimit-requests-reset"] == "2026-11-23T10:00:00Z"
    assert json.loads(raw) == {"type": "error", "error": {"type": "rate_limit_error",
                                                          "message": "Number of requests has exceeded your rate limit"}}


def test_an_exhausted_script_repeats_its_last_step(server: ModelServer) -> None:
    server.add_script("T-1", [Reply("one"), Fail(500)])

    statuses = [claude_call(server, "T-1")[0] for _ in range(4)]

    assert statuses == [200, 500, 500, 500]


def test_conversations_are_chosen_by_marker_and_keep_their_own_cursor(server: ModelServer) -> None:
    server.add_script("TASK-A", [Fail(529), Reply("A done")])
    server.add_script("TASK-B", [Reply("B done")])

    order = [claude_call(server, text)[0] for text in ("TASK-A", "TASK-B", "anything else", "TASK-A")]

    assert order == [529, 200, 200, 200]
    assert [(r.conversation, r.step) for r in server.requests] == [
        ("TASK-A", "Fail"), ("TASK-B", "Reply"), ("", "Reply"), ("TASK-A", "Reply")]


def test_the_default_script_restarts_for_each_cli_session_but_marked_scripts_do_not() -> None:
    with ModelServer([Fail(529), Reply("fine")]) as server:
        server.add_script("TASK-M", [Fail(529), Reply("marked")])
        calls = [("no marker", "s1"), ("no marker", "s2"), ("no marker", "s1"), ("TASK-M", "s1"), ("TASK-M", "s2")]
        order = [request(server, "POST", "/v1/messages", claude_body(text, stream=False),
                         headers={"x-claude-code-session-id": session})[0] for text, session in calls]

    assert order == [529, 529, 200, 529, 200]
    assert [r.session for r in server.requests] == ["s1", "s2", "s1", "s1", "s2"]


def test_reported_usage_is_totalled_per_conversation_and_never_for_failures(server: ModelServer) -> None:
    server.add_script("T-1", [Fail(529), WriteFile("a", "x", usage=Tokens(10, 2, 3, 4)),
                              Reply("ok", usage=Tokens(20, 5, 6, 0))])
    server.add_script("T-2", [Reply("other", usage=Tokens(100, 100, 100, 100))])

    for text in ("T-1", "T-1", "T-2", "T-1"):
        claude_call(server, text)

    assert server.reported_usage("T-1") == Tokens(30, 7, 9, 4)
    assert server.reported_usage("T-2") == Tokens(100, 100, 100, 100)
    assert server.reported_usage() == Tokens()


def test_requests_are_recorded_with_secrets_redacted(server: ModelServer) -> None:
    body = claude_body("T-1")
    request(server, "POST", "/v1/messages?beta=true", body,
            headers={"x-api-key": "sk-ant-real", "Authorization": "Bearer sk-real", "anthropic-version": "2023-06-01"})

    recorded = server.requests[0]
    assert (recorded.method, recorded.path, recorded.body, recorded.has_tools) == (
        "POST", "/v1/messages?beta=true", body, True)
    assert recorded.headers["x-api-key"] == recorded.headers["authorization"] == "<redacted>"
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert "sk-" not in json.dumps(recorded.headers)


# ------------------------------------------------------------------------------------------ openai API
def test_responses_stream_an_exec_command_that_really_writes_the_file(server: ModelServer, tmp_path: Path) -> None:
    content = "line one\n'quoted' \"double\" $PATH `tick` \\ back\n-dash\n"
    server.add_script("T-9", [WriteFile("pkg/mod.txt", content)])

    status, _, raw = request(server, "POST", "/v1/responses", codex_body("T-9"))
    events = sse(raw)
    item = dict(events)["response.output_item.done"]["item"]
    subprocess.run(["bash", "-c", json.loads(item["arguments"])["cmd"]], cwd=tmp_path, check=True)

    assert status == 200
    assert [name for name, _ in events] == ["response.created", "response.output_item.added",
                                            "response.output_item.done", "response.completed"]
    assert (item["type"], item["name"]) == ("function_call", "exec_command")
    assert (tmp_path / "pkg" / "mod.txt").read_text() == content


def test_responses_reply_reports_usage_with_cached_tokens_inside_input(server: ModelServer) -> None:
    server.add_script("T-9", [Reply("Finished.", usage=Tokens(input=900, output=70, cache_read=100, cache_write=30))])

    _, _, raw = request(server, "POST", "/v1/responses", codex_body("T-9"))
    events = dict(sse(raw))

    assert events["response.output_text.delta"]["delta"] == "Finished."
    completed = events["response.completed"]["response"]
    assert completed["output"][0]["content"][0]["text"] == "Finished."
    assert completed["usage"]["input_tokens"] == 1000
    assert completed["usage"]["input_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 30}
    assert completed["usage"]["output_tokens"] == 70
    assert server.reported_usage("T-9") == Tokens(900, 70, 100, 30)


def test_responses_run_command_and_failures(server: ModelServer) -> None:
    server.add_script("T-9", [Fail(500, "We're currently experiencing high demand"), RunCommand("ls -la")])

    failed = request(server, "POST", "/v1/responses", codex_body("T-9"))
    _, _, raw = request(server, "POST", "/v1/responses", codex_body("T-9"))

    assert failed[0] == 500
    assert json.loads(failed[2])["error"]["message"] == "We're currently experiencing high demand"
    item = dict(sse(raw))["response.output_item.done"]["item"]
    assert json.loads(item["arguments"]) == {"cmd": "ls -la", "login": False}


# --------------------------------------------------------------------------------- hangs and stopping
def stop_in_background(server: ModelServer) -> threading.Thread:
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(timeout=10)
    return stopper


def test_hang_never_answers_and_stop_releases_it() -> None:
    server = ModelServer([Hang()]).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.5)
    connection.request("POST", "/v1/messages", body=json.dumps(claude_body("x")))

    with pytest.raises(TimeoutError):
        connection.getresponse()

    assert not stop_in_background(server).is_alive()
    connection.close()
    assert [r.step for r in server.requests] == ["Hang"]


@pytest.mark.parametrize(("path", "body", "first_event"), [
    ("/v1/messages?beta=true", claude_body("x"), "message_start"),
    ("/v1/responses", codex_body("x"), "response.created"),
])
def test_stall_sends_headers_and_one_event_then_nothing(path: str, body: dict[str, Any], first_event: str) -> None:
    server = ModelServer([Stall()]).start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=0.5)
    connection.request("POST", path, body=json.dumps(body))
    response = connection.getresponse()

    first = response.read1()
    with pytest.raises(TimeoutError):
        response.read1()

    assert response.status == 200 and response.getheader("content-type") == "text/event-stream"
    assert sse(first)[0][0] == first_event
    assert not stop_in_background(server).is_alive()
    connection.close()


def test_stop_cuts_idle_keep_alive_connections_and_frees_the_port() -> None:
    server = ModelServer().start()
    port = server.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("POST", "/v1/messages", body=json.dumps(claude_body("x")))
    connection.getresponse().read()          # the connection stays open (HTTP/1.1 keep-alive)

    assert not stop_in_background(server).is_alive()
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/v1/models")
    connection.close()


def test_clients_that_hang_up_mid_answer_are_normal(capfd: pytest.CaptureFixture[str]) -> None:
    body = json.dumps(claude_body("x")).encode()
    with ModelServer([Reply("x" * 5_000_000)]) as server:     # far more than the socket buffers hold
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))
            client.recv(1)                                   # the answer has started; now hang up
        assert request(server, "GET", "/v1/models")[0] == 200   # and the server keeps serving

    assert capfd.readouterr().err == ""


def test_handler_bugs_are_reported_on_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with ModelServer() as server, socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        client.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n")
        assert client.recv(1024) == b""                      # the handler failed: no answer, closed

    assert "ValueError" in capfd.readouterr().err


def test_lifecycle_errors_are_explicit() -> None:
    server = ModelServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()                              # a second stop is harmless


def test_scripts_need_steps_and_markers() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        ModelServer([])
    with ModelServer() as server:
        with pytest.raises(ValueError, match="at least one step"):
            server.add_script("T-1", [])
        with pytest.raises(ValueError, match="non-empty"):
            server.add_script("", [Reply("x")])


# -------------------------------------------------------------------------------------- other routes
def test_other_routes_are_recorded_and_answered(server: ModelServer) -> None:
    models = request(server, "GET", "/v1/models")
    tokens = request(server, "POST", "/v1/messages/count_tokens", claude_body("count me"))
    unknown = request(server, "POST", "/v1/chat/completions", {"model": "x"})
    proxied = request(server, "CONNECT", "example.com:443")

    assert models[0] == 200 and json.loads(models[2])["data"] == []
    assert tokens[0] == 200 and json.loads(tokens[2])["input_tokens"] > 0
    assert unknown[0] == 404
    assert proxied[0] == 403
    assert [(r.method, r.path, r.step) for r in server.requests] == [
        ("GET", "/v1/models", None), ("POST", "/v1/messages/count_tokens", None),
        ("POST", "/v1/chat/completions", None), ("CONNECT", "example.com:443", None)]


def test_an_absolute_uri_request_line_is_routed_by_its_path(server: ModelServer) -> None:
    server.add_script("T-1", [Reply("via proxy form")])

    status, _, raw = request(server, "POST", f"{server.url}/v1/messages?beta=true", claude_body("T-1"))

    assert status == 200 and "via proxy form" in raw.decode()


# ----------------------------------------------------------------------------------- request reading
def test_user_text_and_working_directory_read_both_apis() -> None:
    claude, codex = claude_body("T-1 hello"), codex_body("T-2 hi")

    assert "T-1 hello" in user_text(claude) and "dev" not in user_text(codex) and "T-2 hi" in user_text(codex)
    assert working_directory(claude) == CWD
    assert working_directory(codex) == CWD
    assert working_directory({"system": "Working directory: /srv/x\n", "messages": []}) == "/srv/x"
    as_system_message = {"role": "system", "content": [{"type": "text", "text": " - Primary working directory: /w"}]}
    assert working_directory({"messages": [{"role": "user", "content": "hi"}, as_system_message]}) == "/w"
    assert working_directory({"messages": [{"role": "user", "content": "no cwd"}]}) is None
    assert user_text("not a dict") == "" and working_directory(None) is None


@pytest.mark.parametrize("content", ["", "plain", "a'b\"c", "$(rm -rf ~) `x` $HOME", "-n\n\n", "ünïcødé ✓\n"])
def test_shell_write_command_reproduces_content_exactly(tmp_path: Path, content: str) -> None:
    subprocess.run(["sh", "-c", shell_write_command("out/file.txt", content)], cwd=tmp_path, check=True)

    assert (tmp_path / "out" / "file.txt").read_text(encoding="utf-8") == content


# ------------------------------------------------------------------------------------ client settings
def test_codex_config_points_at_the_server_with_bounded_retries(server: ModelServer, tmp_path: Path) -> None:
    path = server.write_codex_config(tmp_path / "codex-home", retries=2, stream_idle_timeout_ms=1500)

    config = tomllib.loads(path.read_text())
    provider = config["model_providers"][config["model_provider"]]
    assert path == tmp_path / "codex-home" / "config.toml"
    assert (provider["base_url"], provider["wire_api"]) == (f"{server.url}/v1", "responses")
    assert (provider["request_max_retries"], provider["stream_max_retries"]) == (2, 2)
    assert provider["stream_idle_timeout_ms"] == 1500
    assert provider["env_key"] in server.codex_env(path.parent, tmp_path)
    assert config["features"] == {"unbounded_connection_retries": False, "plugins": False}
    assert config["analytics"] == {"enabled": False}
    assert "model" not in config


def test_codex_config_can_pin_a_model(tmp_path: Path) -> None:
    config = tomllib.loads(write_codex_config(tmp_path, "http://127.0.0.1:9/v1", model="gpt-5.5").read_text())

    assert config["model"] == "gpt-5.5"


def test_client_environments_use_only_names_the_daemon_passes(server: ModelServer, tmp_path: Path) -> None:
    allowed = ("ANTHROPIC_", "CLAUDE_CODE_", "OPENAI_")
    envs = [server.claude_env(tmp_path, max_retries=3), server.codex_env(tmp_path / ".codex", tmp_path)]

    for env in envs:
        assert all(name.startswith(allowed) or name in {"HOME", "CODEX_HOME"} for name in env)
    assert envs[0]["ANTHROPIC_BASE_URL"] == server.anthropic_base_url
    assert envs[0]["CLAUDE_CODE_MAX_RETRIES"] == "3"
    assert claude_env("http://x", tmp_path)["HOME"] == str(tmp_path)


# ------------------------------------------------------------------------------------------------ demo
def test_demo_script_writes_runnable_python_then_summarises() -> None:
    write, reply = demo_script()

    assert isinstance(write, WriteFile) and isinstance(reply, Reply)
    namespace: dict[str, Any] = {}
    exec(compile(write.content, write.path, "exec"), namespace)
    assert namespace["greet"]("Conveyor") == "Hello, Conveyor!"
    assert write.path in reply.text


def test_module_cli_prints_its_urls_and_serves_the_demo_until_terminated() -> None:
    process = subprocess.Popen([sys.executable, "-m", "tests.support.model_server", "--script", "demo"], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        port = ready["port"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/v1/messages", body=json.dumps(claude_body("make a demo")))
        events = sse(connection.getresponse().read())
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)

    assert ready == {"anthropic_base_url": f"http://127.0.0.1:{port}",
                     "openai_base_url": f"http://127.0.0.1:{port}/v1", "port": port}
    assert tool_input(events)[1]["file_path"] == f"{CWD}/hello.py"
    assert process.returncode == 0, stderr
