"""Who may use the dashboard: a random token in a 0600 file, a cookie derived from it, and CSRF tokens.

The token never travels in a cookie or a page: the login link carries it once, the cookie holds an HMAC of
it (so a leaked cookie is not the token), and forms carry another HMAC of it (the CSRF token), which a
cross-site page cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("conveyor.dashboard")
TOKEN_FILE = "dashboard.token"
COOKIE = "conveyor_dashboard"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def load_token(state_dir: Path) -> str:
    """The dashboard's token, made on first use; a file others can read is tightened to 0600 (and said)."""
    path = state_dir / TOKEN_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            log.warning("dashboard.token_mode_fixed", file=str(path), mode=oct(mode))
            os.chmod(path, 0o600)
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 32:
            return token
        log.warning("dashboard.token_replaced", file=str(path), why="shorter than 32 characters")
        path.unlink()
        return load_token(state_dir)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(token + "\n")
    return token


class Keys:
    """The values derived from one token: the session cookie and the CSRF token."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("ascii")
        self.session = self._derive("session")
        self.csrf = self._derive("csrf")

    def _derive(self, purpose: str) -> str:
        return hmac.new(self._token, purpose.encode("ascii"), hashlib.sha256).hexdigest()

    def token_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode("utf-8", "replace"), self._token)

    def session_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode("utf-8", "replace"),
                                                           self.session.encode("ascii"))

    def csrf_ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode("utf-8", "replace"),
                                                           self.csrf.encode("ascii"))


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def allowed_hosts(host: str) -> list[str]:
    """Host header names a request may carry: the loopback names, plus the bound address if it is another.
    Anything else (a rebinding attacker's domain that resolves to 127.0.0.1) is refused."""
    names = ["127.0.0.1", "localhost", "[::1]", "::1"]
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(f"[{host}]" if ":" in host else host)
    return names


def login_url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/login?token={token}"
