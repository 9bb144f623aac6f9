"""The dashboard's routes: pages, the live event stream, a JSON twin of `conveyor status`, two actions.

Pages are rendered on the server (they work without JavaScript); one small script in `static/` follows
the event stream and redraws the Kanban. Every string from the board or an agent goes through Jinja's
autoescaping or `textContent`, never into markup.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from conveyor.config import Config
from conveyor.dashboard import actions, readers
from conveyor.dashboard.auth import COOKIE, Keys
from conveyor.dashboard.feed import COLUMNS, BoardFeed, board_view, read_status
from conveyor.dashboard.guard import Guard

HERE = Path(__file__).resolve().parent
MAX_FORM_BYTES = 64 * 1024
PING_S = 15
COLUMN_TITLES = {"inbox": "Inbox", "waiting": "Waiting", "running": "Running", "needs_input": "Needs input",
                 "done": "Done", "errors": "Errors", "rejected": "Rejected"}


class Pages:
    """The route handlers of one repository's dashboard."""

    def __init__(self, config: Config, keys: Keys, feed: BoardFeed) -> None:
        self.config = config
        self.keys = keys
        self.feed = feed
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))

    def page(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        base = {"csrf": self.keys.csrf, "repo": self.config.repo.name, "titles": COLUMN_TITLES, "columns": COLUMNS}
        return self.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)

    async def login(self, request: Request) -> Response:
        if not self.keys.token_ok(request.query_params.get("token")):
            return PlainTextResponse("wrong or missing token; use the link `conveyor dashboard --print-url` "
                                     "prints\n", status_code=401)
        # a page, not a redirect: a SameSite=Strict cookie set during a cross-site navigation (a link clicked
        # in a terminal) is not sent on that navigation's redirect, but is on the page's own refresh
        response = self.page(request, "login.html", {})
        response.set_cookie(COOKIE, self.keys.session, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return response

    async def board(self, request: Request) -> Response:
        return self.page(request, "board.html", {"version": self.feed.version, "view": self.feed.view})

    async def events(self, request: Request) -> Response:
        feed = self.feed
        version = version_of(request.headers.get("last-event-id"), feed)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            current = version
            while True:
                current, view = await feed.after(current)
                yield {"event": "board", "id": f"{feed.boot}.{current}", "data": json.dumps(view)}

        return EventSourceResponse(stream(), ping=PING_S, headers={"cache-control": "no-store"})

    async def status_json(self, request: Request) -> Response:
        return JSONResponse(await anyio.to_thread.run_sync(read_status, self.config))

    async def task(self, request: Request) -> Response:
        task_id = str(request.path_params["task_id"])
        detail = await anyio.to_thread.run_sync(readers.task_detail, self.config, task_id)
        if detail is None:
            return self.page(request, "missing.html", {"task_id": task_id}, status_code=404)
        return self.page(request, "task.html", {"task": detail})

    async def spend(self, request: Request) -> Response:
        status = await anyio.to_thread.run_sync(read_status, self.config)
        data = await anyio.to_thread.run_sync(readers.spend, self.config)
        errors = await anyio.to_thread.run_sync(readers.errors_by_kind, status, self.config)
        return self.page(request, "spend.html", {"spend": data, "errors": errors,
                                                 "paused": status.get("paused_tools", []),
                                                 "view": board_view(status)})

    async def act(self, request: Request) -> Response:
        """POST /task/<id>/answer and /task/<id>/retry; the CSRF token is checked before anything is read."""
        task_id = str(request.path_params["task_id"])
        action = str(request.path_params["action"])
        form = await read_form(request)
        if form is None or not self.keys.csrf_ok(form.get("csrf")):
            return PlainTextResponse("missing or wrong CSRF token\n", status_code=403)
        try:
            if action == "answer":
                await anyio.to_thread.run_sync(actions.answer, self.config, task_id, form.get("answer") or "",
                                               time.time())
            elif action == "retry":
                await anyio.to_thread.run_sync(actions.retry, self.config, task_id, time.time())
            else:
                return PlainTextResponse(f"no action {action!r}\n", status_code=404)
        except actions.ActionRefused as exc:
            return PlainTextResponse(f"{exc}\n", status_code=409)
        return RedirectResponse(f"/task/{task_id}", status_code=303)


def create_app(config: Config, keys: Keys, *, hosts: list[str], poll_s: float = 5.0) -> Starlette:
    """The ASGI application for one repository's board."""
    feed = BoardFeed(config, poll_s=poll_s)
    pages = Pages(config, keys, feed)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await feed.start()
        try:
            yield
        finally:
            await feed.stop()

    routes = [
        Route("/login", pages.login), Route("/", pages.board), Route("/events", pages.events),
        Route("/api/status", pages.status_json), Route("/spend", pages.spend), Route("/task/{task_id}", pages.task),
        Route("/task/{task_id}/{action}", pages.act, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts), Middleware(Guard, keys=keys)])
    app.state.feed = feed
    return app


def version_of(last_event_id: str | None, feed: BoardFeed) -> int:
    """The version a reconnecting client has: its own if it is this server's current one, else -1 (send now)."""
    if last_event_id and last_event_id == f"{feed.boot}.{feed.version}":
        return feed.version
    return -1


async def read_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form of at most MAX_FORM_BYTES, one value per field; None when it is something else."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items() if values}
