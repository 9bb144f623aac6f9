"""What a ROADMAP.md means once read: items, their status vocabulary, and the errors about them.

Roadmaps are written by people in many spellings ("✅ Completed", "Done", "DDR-011 completed ✅, glossary
pending"); this module owns the one mapping from those spellings to the six states the daemon acts on, so
the parser, the selector and the editor can never disagree about what a status line means.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from conveyor.core.errors import ConveyorError, Problem

# Ids and agent names (README, "How it behaves"): the task id inside "In Progress (task <id>)" must be one.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Status(StrEnum):
    """The states the daemon distinguishes; every other spelling maps onto one of them."""

    PLANNED = "planned"
    IN_PROGRESS = "in_progress"
    IN_REVIEW = "in_review"
    COMPLETED = "completed"
    BLOCKED = "blocked"
    OTHER = "other"


class ItemKind(StrEnum):
    """How the heading named the item; decides how its number and bare dependency numbers are read."""

    PRIORITY = "priority"  # "PRIORITY 3.5: Title": a number valid across the whole file
    PHASE = "phase"  # "Phase 2: Title" (also Step, Stage): a number within the containing item
    NUMBERED = "numbered"  # "1. Title", "2.3 Title": within the containing item unless dotted


class RoadmapError(ConveyorError):
    """A roadmap operation cannot be done as asked."""


class RoadmapItemNotFound(RoadmapError):
    """The roadmap has no item with the requested number (renumbered or removed by its author)."""


class RoadmapEditError(RoadmapError):
    """A status edit was refused because it could not keep the file intact."""


class RoadmapEditConflict(RoadmapError):
    """The author changed this item's status since the daemon read the file; theirs wins."""


@dataclass(frozen=True)
class RoadmapItem:
    """One heading whose section carries a status line (or a PRIORITY heading, with or without one).

    Line numbers are 0-based indexes into the text split on "\\n". `dependencies` are item numbers,
    already resolved ("Phase 1" inside initiative 1 is "1.1"). `dependencies_understood` is False when a
    dependency line names something that is not an item number ("after the dashboard ships"): the daemon
    cannot check that, so it will not start the item on its own.
    """

    number: str
    title: str
    status: Status
    status_text: str
    heading_line: int
    status_line: int | None
    kind: ItemKind
    level: int
    dependencies: tuple[str, ...] = ()
    dependency_text: str | None = None
    dependencies_understood: bool = True
    agent: str | None = None
    task_id: str | None = None
    pr_url: str | None = None
    body: str = ""
    parent: str | None = None
    children: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How people refer to the item in messages: "PRIORITY 1 (Analytics)", "1.2 Routing tactic"."""
        if self.kind is ItemKind.PRIORITY:
            return f"PRIORITY {self.number} ({self.title})" if self.title else f"PRIORITY {self.number}"
        return f"{self.number} {self.title}" if self.title else self.number

    @property
    def is_leaf(self) -> bool:
        """Only leaves become tasks: an item with parts is done by doing its parts."""
        return not self.children


@dataclass(frozen=True)
class Roadmap:
    """All items in document order, plus what was wrong with the file (kept going, never raised)."""

    items: tuple[RoadmapItem, ...]
    problems: tuple[Problem, ...] = ()
    _index: dict[str, RoadmapItem] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {item.number: item for item in self.items})

    def __iter__(self) -> Iterator[RoadmapItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, number: str) -> RoadmapItem | None:
        return self._index.get(number)

    def item(self, number: str) -> RoadmapItem:
        """The item numbered `number`, or a RoadmapItemNotFound that lists what exists."""
        found = self._index.get(number)
        if found is None:
            known = ", ".join(self._index) or "none"
            raise RoadmapItemNotFound(f"ROADMAP.md has no item {number} (items: {known})")
        return found

    def ancestors(self, item: RoadmapItem) -> list[RoadmapItem]:
        """Containing items, nearest first."""
        chain: list[RoadmapItem] = []
        parent = self._index.get(item.parent) if item.parent else None
        while parent is not None and len(chain) < len(self.items):
            chain.append(parent)
            parent = self._index.get(parent.parent) if parent.parent else None
        return chain


# --- status vocabulary -------------------------------------------------------------------------------

# A status line is read by finding every known spelling in it. Order matters inside the table: a matched
# span is blanked before later patterns run, so "not started" is never also read as "started" and
# "pending review" never as "pending". `None` marks words that mean "not something to work on"
# (cancelled, proposed...): they make the status `other`.
_Vocab = tuple[tuple[re.Pattern[str], Status | None], ...]


def _vocab(rows: list[tuple[str, Status | None]]) -> _Vocab:
    return tuple((re.compile(pattern, re.IGNORECASE), status) for pattern, status in rows)


_VOCABULARY = _vocab([
    (r"\bon[\s-]*hold\b|\bblocked\b|\bstalled\b|\bstuck\b|\bpaused\b|\bfailed\b|\bfailing\b"
     r"|⚠|🚫|⛔|🛑|⏸|❌", Status.BLOCKED),
    (r"\bcancell?ed\b|\bdropped\b|\babandoned\b|\bwon'?t\s+(?:do|fix)\b|\bwontfix\b|\bsuperseded\b"
     r"|\bobsolete\b|\brejected\b|\bdeferred\b|\bproposed\b|\bidea\b|💡", None),
    (r"\bnot\s+(?:yet\s+)?(?:started|begun|done|complete[d]?|finished)\b|\bincomplete\b|\bunfinished\b",
     Status.PLANNED),
    (r"\b(?:in|under|awaiting|ready\s+for|pending|needs|for)\s+review\b|\breviewing\b|\bpr\s+open(?:ed)?\b"
     r"|👀", Status.IN_REVIEW),
    (r"\bpartial(?:ly)?\b|\bin[\s-]*progress\b|\bwip\b|\bongoing\b|\bunder\s*way\b|\bstarted\b"
     r"|\bworking\b|\bimplementing\b|\bactive\b|\bdoing\b|🔄|🚧|🏗", Status.IN_PROGRESS),
    (r"\bcomplete[d]?\b|\bdone\b|\bfinished\b|\bmerged\b|\bshipped\b|\bdelivered\b|\bimplemented\b"
     r"|\bresolved\b|✅|✔|☑|✓", Status.COMPLETED),
    (r"\bplanned\b|\bplanning\b|\bpending\b|\bto[\s-]?do\b|\bqueued\b|\bbacklog\b|\bready\b|\bscheduled\b"
     r"|\bupcoming\b|📝|📋|⬜|🔲|☐", Status.PLANNED),
])

_PARENTHESISED = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_MARKUP = re.compile(r"\*\*|__|`|~~")


def strip_parentheses(text: str) -> str:
    """Remove (...) and [...] groups, innermost first: they hold task ids, URLs and reasons, not states."""
    for _ in range(8):
        stripped = _PARENTHESISED.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return text


def _found_states(text: str) -> list[Status | None]:
    found: list[Status | None] = []
    for pattern, status in _VOCABULARY:
        if pattern.search(text):
            found.append(status)
            text = pattern.sub(" ", text)
    return found


def _resolve(found: list[Status | None]) -> Status:
    """Strongest signal wins; "X completed, Y pending" means the work is under way."""
    if Status.BLOCKED in found:
        return Status.BLOCKED
    if None in found:
        return Status.OTHER
    for status in (Status.IN_REVIEW, Status.IN_PROGRESS):
        if status in found:
            return status
    if Status.COMPLETED in found and Status.PLANNED in found:
        return Status.IN_PROGRESS
    for status in (Status.COMPLETED, Status.PLANNED):
        if status in found:
            return status
    return Status.OTHER


def classify_status(text: str) -> Status:
    """Map a status as written ("📝 Planned", "✅ **COMPLETED** (Sprint 2)", "Not Started") to a Status.

    Parenthesised parts are ignored first (they carry task ids, PR URLs and reasons that may contain any
    word); if nothing is recognised without them, the whole text is tried. Unknown → `other`.
    """
    plain = _MARKUP.sub(" ", text)
    found = _found_states(strip_parentheses(plain))
    if not found:
        found = _found_states(plain)
    return _resolve(found)


def is_status_phrase(text: str) -> bool:
    """True when `text` is only a status ("PARTIALLY COMPLETE", "✅ Done"): safe to cut from a title."""
    rest = _MARKUP.sub(" ", text)
    hit = False
    for pattern, _ in _VOCABULARY:
        rest, count = pattern.subn(" ", rest)
        hit = hit or count > 0
    return hit and not re.search(r"\w", rest)
