"""UTC timestamps in the board's format (ISO 8601 with a `Z`), and a clock that tests can pass in."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
"""Returns seconds since the epoch; `time.time` in production, a fake in tests."""


def utc_iso(ts: float | None = None) -> str:
    """Format epoch seconds (default: now) as `2026-11-23T09:00:00Z`."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float | None:
    """Parse an ISO 8601 timestamp (with `Z`, an offset, or naive = UTC) to epoch seconds; None if invalid."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
