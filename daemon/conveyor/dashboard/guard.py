"""The ASGI layer in front of every route: login cookie, CSRF on the state-changing routes, safe headers.

Plain ASGI (not Starlette's BaseHTTPMiddleware) so the event stream is never buffered. The Host header is
checked before this by Starlette's TrustedHostMiddleware (DNS rebinding).
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.dashboard.auth import COOKIE, Keys

OPEN_PATHS = ("/login", "/static/")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
NOT_LOGGED_IN = ("Not logged in. Open the login link that `conveyor dashboard --print-url` prints "
                 "(it carries the token from the 0600 file in the state folder).\n")


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def session_cookie(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


def same_origin(scope: Scope) -> bool:
    """A POST must come from one of our own pages: Sec-Fetch-Site and Origin, when the browser sends them,
    must say so (the CSRF token is checked besides, by the route)."""
    site = header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = header(scope, b"origin")
    if origin is None or origin == "null":   # `null`: our pages' Referrer-Policy no-referrer hides it
        return True
    host = header(scope, b"host") or ""
    return urlsplit(origin).netloc == host


class Guard:
    """Refuses requests without the session cookie (401), cross-site POSTs (403), and adds safe headers."""

    def __init__(self, app: ASGIApp, keys: Keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        path = str(scope.get("path", ""))
        if not path.startswith(OPEN_PATHS) and not self.keys.session_ok(session_cookie(scope)):
            await PlainTextResponse(NOT_LOGGED_IN, status_code=401)(scope, receive, send_with_headers)
            return
        if scope.get("method") not in ("GET", "HEAD") and not same_origin(scope):
            await PlainTextResponse("cross-site request refused\n", status_code=403)(scope, receive,
                                                                                    send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
