"""Serving the dashboard with uvicorn on a socket we bind ourselves (so the port is known before serving).

A non-loopback address is refused unless asked for with `allow_remote`, and then warned about: the token
still guards every route, but the page travels unencrypted.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn

from conveyor.config import Config
from conveyor.core import yamlio
from conveyor.core.errors import ConveyorError
from conveyor.dashboard.app import create_app
from conveyor.dashboard.auth import Keys, allowed_hosts, is_loopback, load_token

log = structlog.get_logger("conveyor.dashboard")
RUNTIME_FILE = "dashboard.json"     # where a running dashboard listens (no token): for --print-url


class DashboardError(ConveyorError):
    """The dashboard cannot start; the message says why and what to do."""


def bind(host: str, port: int, *, allow_remote: bool) -> socket.socket:
    if not is_loopback(host) and not allow_remote:
        raise DashboardError(f"refusing to serve the dashboard on {host!r}, which is not a loopback address: "
                             "anyone who can reach it could try the login. Use 127.0.0.1 (the default), or set "
                             "`dashboard: {allow_remote: true}` in daemon.yaml (or --allow-remote) if you mean it")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another port with --port "
                             "or `dashboard: {port: ...}` in daemon.yaml") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def runtime_path(config: Config) -> Path:
    return config.state_dir / RUNTIME_FILE


def running_url(config: Config) -> tuple[str, int] | None:
    """(host, port) of the dashboard this repository runs now, from its runtime file."""
    try:
        data = json.loads(runtime_path(config).read_text(encoding="utf-8"))
        return str(data["host"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _runtime_file(config: Config, host: str, port: int) -> Iterator[None]:
    path = runtime_path(config)
    yamlio.atomic_write(path, json.dumps({"host": host, "port": port, "pid": os.getpid()}) + "\n", durable=False)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def build_server(config: Config, host: str, port: int, *, allow_remote: bool,
                 poll_s: float = 5.0) -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the dashboard and the socket it will serve on (already bound)."""
    sock = bind(host, port, allow_remote=allow_remote)
    if not is_loopback(host):
        log.warning("dashboard.remote", host=host,
                    why="the dashboard listens beyond this machine; only the token protects it and the "
                        "connection is not encrypted (put it behind a TLS proxy)")
    keys = Keys(load_token(config.state_dir))
    app = create_app(config, keys, hosts=allowed_hosts(host), poll_s=poll_s)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=2))
    return server, sock


def serve(config: Config, host: str, port: int, *, allow_remote: bool) -> None:
    """Serve until interrupted (uvicorn handles SIGINT/SIGTERM in the main thread)."""
    server, sock = build_server(config, host, port, allow_remote=allow_remote)
    actual = sock.getsockname()[1]
    log.info("dashboard.listening", url=f"http://{host}:{actual}/",
             login="run `conveyor dashboard --print-url` for the login link")
    with _runtime_file(config, host, actual):
        server.run(sockets=[sock])


@contextlib.contextmanager
def beside_daemon(config: Config) -> Iterator[None]:
    """`dashboard: {enabled: true}`: serve the dashboard on a thread of the daemon's process while the block
    runs. A dashboard that cannot start is logged and the daemon runs without it."""
    settings = config.daemon.dashboard
    if not settings.enabled:
        yield
        return
    try:
        server, sock = build_server(config, settings.host, settings.port, allow_remote=settings.allow_remote)
    except (DashboardError, OSError) as exc:
        log.error("dashboard.not_started", error=str(exc), note="the daemon runs without its dashboard")
        yield
        return
    actual = sock.getsockname()[1]
    with _runtime_file(config, settings.host, actual):
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="conveyor-dashboard",
                                  daemon=True)
        thread.start()
        log.info("dashboard.listening", url=f"http://{settings.host}:{actual}/",
                 login="run `conveyor dashboard --print-url` for the login link")
        try:
            yield
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
