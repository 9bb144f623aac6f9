"""Provider limits in words: which messages mean rate-limited, overloaded or logged out, and when they lift.

Agent CLIs report limits as prose, so the daemon needs one place that knows the real wording (and that a
`tools.yaml` entry can extend for CLIs we have never seen). Nothing here reads the clock: `now` is passed in.

Real wording, collected from the CLIs' public issue trackers:
- claude: "Claude AI usage limit reached|1762952400" (epoch; anthropics/claude-code#11429, #9046);
  "Claude usage limit reached. Your limit will reset at 5pm (Europe/Warsaw)." (#6119);
  "Weekly limit reached · resets 10am (Asia/Seoul) · /upgrade to Max or turn on /extra-usage" (#12789);
  "You've hit your limit · resets 4:50am (Europe/Rome)" (#52575); "You've hit your session limit ·
  resets 3:50pm (Asia/Tokyo)" (#86272); "You've hit your weekly limit · resets Jul 31, 2am (UTC)" (#81647);
  "... resets Sep 15 at 7pm" (#92834); "... resets Apr 23 at 4pm (America/Recife)" (#51981).
- codex: "You've hit your usage limit. Upgrade to Pro (...) or try again in 5 days 22 hours 11 minutes."
  (openai/codex#3899, #3124); "... or try again at Jul 5th, 2026 8:19 PM." (#26668); same-day resets print
  "Try again at 3:05 PM." in the machine's local time (codex-rs/core/src/error.rs, format_retry_timestamp);
  the backend's JSON body carries "resets_at"/"resets_in_seconds" (earendil-works/pi#4172).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conveyor.runner.types import Outcome

LimitVerdict = tuple[Outcome, float | None]
"""An outcome that is a provider limit, and when it lifts (epoch seconds) if the message said."""

_STATUS_PREFIX = r"(?:status(?:\s+code)?|error|API Error|HTTP)[:\s]*\(?"

DEFAULT_RATE_LIMITED: tuple[str, ...] = (
    _STATUS_PREFIX + r"429\b",
    r"\(429\)",
    r"too many requests",
    r"\brate[ _-]?limit(?:ed\b|_error\b|_exceeded\b|\s+(?:exceeded|reached|hit)\b)",
    r"usage[ _]limit",                                    # "usage limit reached", "usage_limit_reached"
    r"hit your (?:[\w-]+ )?limit",                        # "You've hit your (session|weekly) limit"
    r"\b(?:5-hour|five[ -]hour|session|daily|weekly|opus|sonnet)\b[\w ]{0,20}\blimit reached",
    r"limits? will reset",
    r"quota exceeded|insufficient_quota|exceeded your current quota",
)
DEFAULT_OVERLOADED: tuple[str, ...] = (
    r"\boverloaded",                                      # "overloaded_error", "Overloaded"
    r"high demand",                                       # codex: "We're currently experiencing high demand"
    _STATUS_PREFIX + r"5(?:00|02|03|04|29)\b",
    r"\(5(?:00|02|03|04|29)\)",
    r"\b5\d\d (?:Internal Server Error|Bad Gateway|Service Unavailable|Gateway Timeout)",
    # The provider could not be reached: not the task's fault either, so retry with backoff.
    r"connection (?:failed|error|refused|reset)",
    r"error sending request|stream disconnected|idle timeout waiting for SSE",
    r"\bECONNREFUSED\b|\bECONNRESET\b|\bETIMEDOUT\b|socket hang up",
)
DEFAULT_AUTH_EXPIRED: tuple[str, ...] = (
    _STATUS_PREFIX + r"40[13]\b",
    r"\(40[13]\)",
    r"\b401 Unauthorized|\b403 Forbidden",
    r"authentication[_ ](?:error|failed)|failed to authenticate",
    r"invalid (?:x-)?api[ _-]?key|api key (?:is )?(?:invalid|expired|revoked)",
    r"token (?:has )?(?:expired|been revoked)|could not be refreshed",
    r"please (?:run /login|log ?in|sign in)|not logged in|(?:log ?in|sign in) again|re-?authenticate",
)


def _compile(kind: str, patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"invalid {kind} pattern {pattern!r}: {exc}") from exc
    return tuple(compiled)


@dataclass(frozen=True)
class LimitPatterns:
    """Regular expressions (case-insensitive) that mark a message as each kind of provider limit.

    The defaults cover claude and codex; a `tools.yaml` entry replaces them, or adds to them via
    `extended`. An invalid expression raises ValueError naming it, so config validation can report it.
    """

    rate_limited: tuple[str, ...] = DEFAULT_RATE_LIMITED
    overloaded: tuple[str, ...] = DEFAULT_OVERLOADED
    auth_expired: tuple[str, ...] = DEFAULT_AUTH_EXPIRED
    _compiled: tuple[tuple[Outcome, tuple[re.Pattern[str], ...]], ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Lists from YAML become tuples so the value stays immutable and hashable.
        for name in ("rate_limited", "overloaded", "auth_expired"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Order matters when a message matches several kinds: expired auth needs a human, and a rate
        # limit pauses longer than an overload, so the more conservative reading wins.
        compiled = ((Outcome.AUTH_EXPIRED, _compile("auth_expired", self.auth_expired)),
                    (Outcome.RATE_LIMITED, _compile("rate_limited", self.rate_limited)),
                    (Outcome.OVERLOADED, _compile("overloaded", self.overloaded)))
        object.__setattr__(self, "_compiled", compiled)

    def extended(self, *, rate_limited: tuple[str, ...] | list[str] = (),
                 overloaded: tuple[str, ...] | list[str] = (),
                 auth_expired: tuple[str, ...] | list[str] = ()) -> LimitPatterns:
        """These patterns plus more (a tool's own wording on top of the defaults)."""
        return LimitPatterns(self.rate_limited + tuple(rate_limited), self.overloaded + tuple(overloaded),
                             self.auth_expired + tuple(auth_expired))

    def first_match(self, text: str) -> tuple[Outcome, re.Match[str]] | None:
        """The first kind whose patterns match `text`, with the match."""
        for outcome, regexes in self._compiled:
            for regex in regexes:
                found = regex.search(text)
                if found:
                    return outcome, found
        return None


DEFAULT_LIMITS = LimitPatterns()


def classify_text(text: str, patterns: LimitPatterns, now: float, *,
                  default_tz: tzinfo = UTC) -> LimitVerdict | None:
    """Which provider limit `text` reports, if any, and when it lifts.

    The reset time is looked for near the matching words, so an unrelated time elsewhere in a long
    output is not mistaken for it. Expired auth never carries a reset time: it needs a human.
    """
    if not text:
        return None
    matched = patterns.first_match(text)
    if matched is None:
        return None
    outcome, found = matched
    if outcome is Outcome.AUTH_EXPIRED:
        return outcome, None
    window = text[max(0, found.start() - 200): found.end() + 1000]
    return outcome, parse_reset_time(window, now, default_tz=default_tz)


def outcome_for_status(status: int | None) -> Outcome | None:
    """The provider limit an HTTP status stands for, or None when it is not one."""
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_EXPIRED
    if status in (500, 502, 503, 504, 529):
        return Outcome.OVERLOADED
    return None


_STATUS_RE = re.compile(
    _STATUS_PREFIX + r"([1-5]\d\d)\b|\(([1-5]\d\d)\)"
    r"|\b([1-5]\d\d) (?:Too Many Requests|Unauthorized|Forbidden|Internal Server Error|Bad Gateway"
    r"|Service Unavailable|Gateway Timeout)", re.IGNORECASE)


def extract_status(text: str) -> int | None:
    """The HTTP status an error message names ("last status: 429", "API Error: 529", "(401)")."""
    found = _STATUS_RE.search(text or "")
    if not found:
        return None
    return int(next(group for group in found.groups() if group))


# --- reset times -------------------------------------------------------------------------------------

_EPOCH_RES = (
    re.compile(r"limit reached\|(\d{9,11})\b", re.IGNORECASE),        # claude: "...reached|1762952400"
    re.compile(r"[\"']?(?:resets_at|resetsAt|reset_at)[\"']?\s*[:=]\s*[\"']?(\d{9,11})\b"),
)
_SECONDS_RES = (
    re.compile(r"[\"']?resets_in_seconds[\"']?\s*[:=]\s*(\d+)"),
    re.compile(r"retry[- ]after[\"']?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)?\b", re.IGNORECASE),
)
_UNITS = {"ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
          "d": 86400.0, "day": 86400.0, "days": 86400.0,
          "h": 3600.0, "hr": 3600.0, "hrs": 3600.0, "hour": 3600.0, "hours": 3600.0,
          "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
          "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0}
_UNIT_ALT = (r"(?:milliseconds?|ms|days?|d|hours?|hrs?|hr|h|minutes?|mins?|min|m|seconds?|secs?|sec|s)"
             r"(?![a-z])")
_PART = r"(\d+(?:\.\d+)?)\s*(" + _UNIT_ALT + r")"
_DURATION_RE = re.compile(
    r"(?:try again|retry|resets?|reset)\s+in\s+((?:\d+(?:\.\d+)?\s*" + _UNIT_ALT + r",?\s*(?:and\s+)?)+)",
    re.IGNORECASE)
_PART_RE = re.compile(_PART, re.IGNORECASE)

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_CLOCK_RE = re.compile(
    r"\b(?:resets?|try again)\s+(?:at\s+|on\s+)?"
    r"(?:(?P<mon>" + "|".join(_MONTHS) + r")[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?"
    r"(?:,?\s+(?P<year>\d{4}))?(?:,|\s+at)?\s+)?"
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?\s*(?P<ampm>[ap]\.?\s?m\b\.?)?"
    r"(?:\s*\((?P<tz>[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*)\))?",
    re.IGNORECASE)


def parse_reset_time(text: str, now: float, *, default_tz: tzinfo = UTC) -> float | None:
    """When a limit lifts, as epoch seconds, from the words of a limit message; None if it does not say.

    Understands epochs ("...reached|1762952400", "resets_at": ...), relative times ("try again in
    2 days 3 hours 4 minutes", "retry-after: 30", "try again in 1m30s") from `now`, and wall-clock times
    ("resets 3pm", "resets 4:50am (Europe/Rome)", "try again at Jul 5th, 2026 8:19 PM"): a time without a
    date is the next such time after `now` in the named zone, or `default_tz` when none is named.
    """
    if not text:
        return None
    return _epoch_reset(text) or _relative_reset(text, now) or _clock_reset(text, now, default_tz)


def _epoch_reset(text: str) -> float | None:
    for regex in _EPOCH_RES:
        found = regex.search(text)
        if found:
            return float(found.group(1))
    return None


def _relative_reset(text: str, now: float) -> float | None:
    for regex in _SECONDS_RES:
        found = regex.search(text)
        if found:
            return now + float(found.group(1))
    found = _DURATION_RE.search(text)
    if not found:
        return None
    seconds = sum(float(amount) * _UNITS[unit.lower()] for amount, unit in _PART_RE.findall(found.group(1)))
    return now + seconds


def _zone(name: str | None, default_tz: tzinfo) -> tzinfo:
    if not name:
        return default_tz
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default_tz


def _clock_parts(found: re.Match[str]) -> tuple[int, int] | None:
    """Hour (0-23) and minute of a matched wall-clock time, or None when it is not a time of day."""
    hour, minute = int(found["hour"]), int(found["minute"] or 0)
    ampm = (found["ampm"] or "").lower().replace(".", "").replace(" ", "")
    if not ampm and found["minute"] is None:
        return None                                       # a bare number ("resets 3 times") is not a time
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def _clock_reset(text: str, now: float, default_tz: tzinfo) -> float | None:
    for found in _CLOCK_RE.finditer(text):
        parts = _clock_parts(found)
        if parts is None:
            continue
        zone = _zone(found["tz"], default_tz)
        moment = time(parts[0], parts[1])
        if found["mon"]:
            return _dated_reset(found, moment, zone, now)
        today = datetime.fromtimestamp(now, zone).date()
        candidate = datetime.combine(today, moment, zone)
        if candidate.timestamp() <= now:
            candidate = datetime.combine(today + timedelta(days=1), moment, zone)
        return candidate.timestamp()
    return None


def _dated_reset(found: re.Match[str], moment: time, zone: tzinfo, now: float) -> float | None:
    month = _MONTHS.index(found["mon"][:3].lower()) + 1
    year = int(found["year"]) if found["year"] else datetime.fromtimestamp(now, zone).year
    try:
        candidate = datetime.combine(date(year, month, int(found["day"])), moment, zone)
    except ValueError:
        return None
    if not found["year"] and candidate.timestamp() < now - 180 * 86400:
        # "resets Jan 2" read on Dec 31 means next year; a date just past means the limit has lifted.
        try:
            candidate = candidate.replace(year=year + 1)
        except ValueError:
            return None
    return candidate.timestamp()
