"""What a notification says: our own words and fields only (no agent output, no environment, no token)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

MAX_TEXT = 300          # an error message is cut to this many characters
SUMMARY_IDS = 10        # task ids named in a summary's text


@dataclass(frozen=True)
class Event:
    kind: str                  # task_done, task_failed, needs_input
    task_id: str
    agent: str
    title: str
    text: str                  # one line for people: what happened
    at: str                    # UTC ISO 8601
    pr_url: str | None = None
    branch: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self, repo: str) -> str:
        return f"[{repo}] {self.task_id}: {self.text}"


def summary(events: Sequence[Event], repo: str) -> str:
    """One line for a flood: how many of each kind, and the first task ids."""
    kinds = Counter(event.kind for event in events)
    counts = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(kinds.items()))
    ids = ", ".join(event.task_id for event in events[:SUMMARY_IDS])
    more = f" and {len(events) - SUMMARY_IDS} more" if len(events) > SUMMARY_IDS else ""
    return f"[{repo}] {len(events)} task events: {counts} ({ids}{more})"


def cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
