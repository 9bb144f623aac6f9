"""The environment an agent gets: an allowlist of the daemon's variables plus the tool's own settings.

Why an allowlist: the daemon's environment holds credentials for every tool and the service manager's
sockets; an agent should see only what its tools.yaml entry names. Variables that address the service
manager (`NOTIFY_SOCKET`, `WATCHDOG_*`, `LISTEN_*`, `INVOCATION_ID`) never pass, however configured: a child
that pinged the watchdog or claimed our sockets would make systemd's view of the daemon a lie.

`extra` values may say `${VAR}` to take a variable from `source` (the daemon's environment) and `$${` for a
literal `${`. Only the braced form is expanded; a lone `$`, `$VAR` or an unclosed `${` stay as written.
A `${VAR}` that is not set expands to "" and is logged as `env_var_missing` (the run goes on: the agent will
say what it lacks more precisely than we can).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import structlog

log = structlog.get_logger()

NEVER_PASSED = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                          "LISTEN_FDNAMES", "INVOCATION_ID"})

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_allowed(name: str, allowlist: Sequence[str]) -> bool:
    """True when `name` matches an allowlist entry (exact name or case-sensitive fnmatch glob)."""
    if name in NEVER_PASSED:
        return False
    return any(fnmatchcase(name, pattern) for pattern in allowlist)


def expand(value: str, source: Mapping[str, str]) -> tuple[str, list[str]]:
    """`value` with `${VAR}` taken from `source`; also the names that were not set (expanded to "")."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "${"
        if name not in source:
            missing.append(name)
            return ""
        return source[name]

    return _REFERENCE.sub(replace, value), missing


def build_env(source: Mapping[str, str], allowlist: Sequence[str],
              extra: Mapping[str, str]) -> dict[str, str]:
    """Allowlisted names from `source`, then `extra` expanded from `source` on top; never the blocked ones."""
    env = {name: value for name, value in source.items() if is_allowed(name, allowlist)}
    for key, raw in extra.items():
        if key in NEVER_PASSED:
            log.warning("env_var_blocked", name=key, reason="service-manager variables never reach a child")
            continue
        value, missing = expand(raw, source)
        for name in missing:
            log.warning("env_var_missing", name=name, setting=key, expanded_to="")
        env[key] = value
    return env
