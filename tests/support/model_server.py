"""A scripted fake model on 127.0.0.1 that the real `claude` and `codex` CLIs talk to (tests/e2e/).

It speaks just enough of the Anthropic Messages API (`POST /v1/messages`, SSE or JSON) and the OpenAI
Responses API (`POST /v1/responses`, SSE) for the real CLIs to run their agent loop against it, so a test
drives a real CLI to edit real files. What the model does comes from scripts (`model_script`); how it
looks on the wire from `model_wire`. Run `python -m tests.support.model_server` for the offline demo.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from conveyor.runner.types import Tokens
from tests.support.model_script import (
    Action,
    Fail,
    Hang,
    RecordedRequest,
    Reply,
    RunCommand,
    ScriptBook,
    Stall,
    Step,
    WriteFile,
    demo_script,
    redact,
    reply_script,
    session_id,
    user_text,
)
from tests.support.model_wire import (
    Event,
    anthropic_blocks,
    anthropic_error_body,
    anthropic_events,
    anthropic_message,
    new_id,
    openai_created,
    openai_error_body,
    openai_events,
    openai_item,
)

__all__ = ["Fail", "Hang", "ModelServer", "RecordedRequest", "Reply", "RunCommand", "Stall", "Step", "WriteFile",
           "claude_env", "demo_script", "write_codex_config"]

FAKE_ANTHROPIC_KEY = "sk-ant-fake-conveyor-test-key"
FAKE_OPENAI_KEY = "sk-fake-conveyor-test-key"
CODEX_PROVIDER = "conveyor-fake"


class _Handler(BaseHTTPRequestHandler):
    """Routes one request; every request is recorded before it is answered."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is the record."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.connection)

    # -- plumbing
    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any, conversation: str | None, step: str | None) -> None:
        headers = dict(self.headers.items())
        self.server.book.record(RecordedRequest(self.command, self.path, redact(headers), body, conversation,
                                                step, session_id(headers)))

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", new_id("req"))
        self.send_header("x-request-id", new_id("req"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", new_id("req"))
        self.send_header("x-request-id", new_id("req"))
        self.end_headers()

    def _event(self, name: str, data: dict[str, Any]) -> None:
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _wait_for_stop(self) -> None:
        self.server.stopping.wait()
        self.close_connection = True

    # -- routes
    def do_GET(self) -> None:
        route = urlsplit(self.path).path
        self._record(None, None, None)
        if route.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [], "models": [], "has_more": False})
        else:
            self._json(404, {"error": {"message": f"no route for GET {route}"}})

    def do_HEAD(self) -> None:
        self._record(None, None, None)
        self._json(200, {})

    def do_CONNECT(self) -> None:
        """A CLI that tries to reach the internet through the proxy variables lands here, and is refused."""
        self._record(None, None, None)
        self.close_connection = True
        self._json(403, {"error": {"message": "offline: only the fake model is reachable"}})

    def do_POST(self) -> None:
        route = urlsplit(self.path).path.rstrip("/")
        body = self._read_body()
        if route.endswith("/messages/count_tokens"):
            self._record(body, None, None)
            self._json(200, {"input_tokens": len(json.dumps(body)) // 4})
        elif route.endswith("/messages"):
            self._anthropic(body)
        elif route.endswith("/responses"):
            self._openai(body)
        else:
            self._record(body, None, None)
            self._json(404, {"error": {"message": f"no route for POST {route}"}})

    def _scripted(self, body: Any) -> tuple[str, Step]:
        marker, step = self.server.book.next_step(user_text(body), session_id(dict(self.headers.items())))
        self._record(body, marker, type(step).__name__)
        return marker, step

    def _hold(self, step: Step, stall_event: Event) -> bool:
        """Serve Hang and Stall; True when the step was one of them."""
        if isinstance(step, Stall):
            self._start_stream()
            self._event(*stall_event)
        if isinstance(step, Hang | Stall):
            self._wait_for_stop()
            return True
        return False

    def _anthropic(self, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        model = str(body.get("model") or "claude-fake")
        if not body.get("tools"):
            self._record(body, None, "side")
            self._anthropic_answer(body, ([{"type": "text", "text": "OK"}], "end_turn"), model, Tokens())
            return
        marker, step = self._scripted(body)
        if isinstance(step, Fail):
            self._json(step.status, anthropic_error_body(step.status, step.message), step.headers)
            return
        message = anthropic_message([], "end_turn", model, Tokens())
        if self._hold(step, anthropic_events(message)[0]):
            return
        assert isinstance(step, Action)
        try:
            blocks = anthropic_blocks(step, body)
        except ValueError as exc:      # a script this request cannot carry out: make it visible
            self._json(400, anthropic_error_body(400, f"fake model: {exc}"), {"x-should-retry": "false"})
            return
        self.server.book.add_usage(marker, step.usage)   # before answering: a client may check at once
        self._anthropic_answer(body, blocks, model, step.usage)

    def _anthropic_answer(self, body: dict[str, Any], blocks: tuple[list[dict[str, Any]], str], model: str,
                          usage: Tokens) -> None:
        message = anthropic_message(blocks[0], blocks[1], model, usage)
        if not body.get("stream"):
            self._json(200, message)
            return
        self._start_stream()
        for name, data in anthropic_events(message):
            self._event(name, data)
        self._end_stream()

    def _openai(self, body: Any) -> None:
        body = body if isinstance(body, dict) else {}
        model = str(body.get("model") or "gpt-fake")
        marker, step = self._scripted(body)
        if isinstance(step, Fail):
            self._json(step.status, openai_error_body(step.status, step.message), step.headers)
            return
        if self._hold(step, openai_created(model)):
            return
        assert isinstance(step, Action)
        self.server.book.add_usage(marker, step.usage)   # before answering: a client may check at once
        self._start_stream()
        for name, data in openai_events(model, openai_item(step), step.usage):
            self._event(name, data)
        self._end_stream()


class _Server(ThreadingHTTPServer):
    """Tracks open connections so `stop()` can cut hung and keep-alive ones at once."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], book: ScriptBook) -> None:
        self.book = book
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def cut_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-answer is normal here (killed CLIs, stop()); anything else is a bug."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


# ------------------------------------------------------------------------------------------- the server
class ModelServer:
    """The fake model server. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(self, default: Sequence[Step] = (Reply("Done."),), host: str = "127.0.0.1", port: int = 0):
        self._book = ScriptBook(default)
        self._address = (host, port)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> ModelServer:
        if self._httpd is not None:
            raise RuntimeError("the model server is already running")
        self._httpd = _Server(self._address, self._book)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-model-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: hung and stalled requests are released, open connections are cut."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.cut_connections()
        httpd.server_close()
        thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripts and observations
    def add_script(self, marker: str, steps: Sequence[Step]) -> None:
        """Serve `steps` to every request whose user content contains `marker` (first added wins)."""
        self._book.add_script(marker, steps)

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._book.requests()

    def reported_usage(self, marker: str = "") -> Tokens:
        """Usage the server reported for the conversation of `marker` ("" = the default script)."""
        return self._book.reported_usage(marker)

    # -- addresses and client configuration
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the model server is not running")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    def claude_env(self, home: Path, *, max_retries: int = 1) -> dict[str, str]:
        """What claude needs (besides PATH and LANG) to use this server with a private HOME, offline."""
        return claude_env(self.anthropic_base_url, home, max_retries=max_retries)

    def codex_env(self, codex_home: Path, home: Path) -> dict[str, str]:
        """What codex needs (besides PATH and LANG) once `write_codex_config(codex_home)` ran."""
        return {"HOME": str(home), "CODEX_HOME": str(codex_home), "OPENAI_API_KEY": FAKE_OPENAI_KEY}

    def write_codex_config(self, codex_home: Path, *, retries: int = 1, stream_idle_timeout_ms: int = 10_000,
                           model: str | None = None) -> Path:
        """Write `$CODEX_HOME/config.toml` pointing codex at this server; returns the file."""
        return write_codex_config(codex_home, self.openai_base_url, retries=retries,
                                  stream_idle_timeout_ms=stream_idle_timeout_ms, model=model)


def claude_env(base_url: str, home: Path, *, max_retries: int = 1) -> dict[str, str]:
    """Environment for claude: the fake endpoint, a fake key, no non-essential traffic, few retries.

    Only names the daemon's allowlist passes (ANTHROPIC_*, CLAUDE_CODE_*, HOME): measured on 2.1.328,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC alone stops every other connection (telemetry, updates),
    so DISABLE_TELEMETRY / DISABLE_AUTOUPDATER add nothing.
    """
    return {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
    }


def write_codex_config(codex_home: Path, base_url: str, *, retries: int = 1,
                       stream_idle_timeout_ms: int = 10_000, model: str | None = None) -> Path:
    """A codex config whose model provider is the fake server, with bounded retries and nothing else online.

    Measured on 0.169.0 (any other host is reached only through these): `plugins` off stops the curated
    plugin sync (github.com, api.github.com, chatgpt.com); `analytics` off stops OTLP metrics
    (ab.chatgpt.com); `unbounded_connection_retries` off makes a dead server fail instead of waiting
    forever. A 500 is tried (request_max_retries + 1) x (stream_max_retries + 1) times; a 429 once.
    """
    lines = [f"model = {json.dumps(model)}"] if model else []
    lines += [
        f'model_provider = "{CODEX_PROVIDER}"',
        "check_for_update_on_startup = false",
        "",
        f"[model_providers.{CODEX_PROVIDER}]",
        'name = "Conveyor fake model"',
        f"base_url = {json.dumps(base_url)}",
        'wire_api = "responses"',
        'env_key = "OPENAI_API_KEY"',
        f"request_max_retries = {int(retries)}",
        f"stream_max_retries = {int(retries)}",
        f"stream_idle_timeout_ms = {int(stream_idle_timeout_ms)}",
        "",
        "[features]",
        "unbounded_connection_retries = false",
        "plugins = false",
        "",
        "[analytics]",
        "enabled = false",
        "",
    ]
    codex_home.mkdir(parents=True, exist_ok=True)
    path = codex_home / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ cli
SCRIPTS: dict[str, Callable[[], list[Step]]] = {"demo": demo_script, "reply": reply_script}


@click.command()
@click.option("--port", default=0, show_default=True, help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--script", "script_name", type=click.Choice(sorted(SCRIPTS)), default="demo", show_default=True)
def main(port: int, script_name: str) -> None:
    """Run the fake model server in the foreground; print one JSON line with its URLs once ready."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())   # handlers only set a flag; the loop below acts
    server = ModelServer(SCRIPTS[script_name](), port=port).start()
    click.echo(json.dumps({"anthropic_base_url": server.anthropic_base_url,
                           "openai_base_url": server.openai_base_url, "port": server.port}))
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
