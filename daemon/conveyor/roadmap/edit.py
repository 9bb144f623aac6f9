"""Writing an item's progress back into ROADMAP.md by changing one line and nothing else.

The file belongs to its author: the daemon rewrites only the value of the item's status line, keeping the
key's spelling, bold markers, list dash and line ending; every other byte stays. An item without a status
line gets one inserted right after its heading, in the style its neighbours use. Whether the file on disk
still holds the text that was read (and the atomic write) is the caller's business; `reapply_status`
replays an edit onto a newer text and refuses when the author changed that same status meanwhile.
"""

from __future__ import annotations

from conveyor.roadmap.model import (
    SAFE_NAME,
    ItemKind,
    Roadmap,
    RoadmapEditConflict,
    RoadmapEditError,
    RoadmapItem,
)
from conveyor.roadmap.parse import parse_roadmap, split_key_line

_DEFAULT_PREFIX = {ItemKind.PHASE: "- Status: "}
_PRIORITY_PREFIX = "**Status**: "
_MAX_REASON = 200


def status_in_progress(task_id: str) -> str:
    """`🔄 In Progress (task <id>)`: the id lets a restarted daemon find the task it already made."""
    if SAFE_NAME.fullmatch(task_id) is None:
        raise RoadmapEditError(f"'{task_id}' is not a task id (letters, digits, '.', '_', '-')")
    return f"🔄 In Progress (task {task_id})"


def status_in_review(pr_url: str) -> str:
    """`👀 In Review (<url>)`: the URL is where the reviewer goes, and how merge detection finds the PR."""
    if not pr_url.startswith(("https://", "http://")) or any(c.isspace() or c in "()" for c in pr_url):
        raise RoadmapEditError(f"'{pr_url}' is not a pull-request URL")
    return f"👀 In Review ({pr_url})"


def status_completed() -> str:
    return "✅ Completed"


def status_blocked(reason: str) -> str:
    """`⚠️ Blocked (<reason>)`, the reason folded onto one line and cut short: it lives in a heading's body."""
    folded = " ".join(reason.split()) or "no reason given"
    if len(folded) > _MAX_REASON:
        folded = folded[: _MAX_REASON - 1].rstrip() + "…"
    return f"⚠️ Blocked ({folded})"


def _check_value(new_status: str) -> str:
    value = new_status.strip()
    if not value or any(c in value for c in "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
        raise RoadmapEditError("a status must be one non-empty line of text")
    return value


def _prefix_like(roadmap: Roadmap, item: RoadmapItem, lines: list[str]) -> tuple[str, str]:
    """The prefix and suffix a new status line copies from the nearest item of the same kind and level."""
    def distance(other: RoadmapItem) -> tuple[bool, int]:
        return other.level != item.level, abs(other.heading_line - item.heading_line)

    for other in sorted((o for o in roadmap if o.kind is item.kind and o.status_line is not None), key=distance):
        assert other.status_line is not None
        key_line = split_key_line(lines[other.status_line].removesuffix("\r"))
        if key_line is not None:
            prefix = key_line.prefix if key_line.prefix[-1:].isspace() else key_line.prefix + " "
            return prefix, key_line.suffix.strip()
    return _DEFAULT_PREFIX.get(item.kind, _PRIORITY_PREFIX), ""


def _rewrite(lines: list[str], index: int, value: str) -> None:
    line = lines[index]
    ending = "\r" if line.endswith("\r") else ""
    key_line = split_key_line(line.removesuffix("\r"))
    assert key_line is not None, "the parser found this status line with the same function"
    prefix = key_line.prefix if key_line.value or key_line.prefix[-1:].isspace() else key_line.prefix + " "
    lines[index] = prefix + value + key_line.suffix + ending


def _insert(lines: list[str], roadmap: Roadmap, item: RoadmapItem, value: str) -> None:
    prefix, suffix = _prefix_like(roadmap, item, lines)
    crlf = any(line.endswith("\r") for line in lines)
    at = item.heading_line + 1
    new_line = prefix + value + suffix
    if at == len(lines):  # the heading is the last line and has no newline: the file keeps having none
        lines[item.heading_line] += "\r" if crlf else ""
        lines.append(new_line)
    else:
        lines.insert(at, new_line + ("\r" if crlf else ""))


def set_status(text: str, number: str, new_status: str) -> str:
    """Return `text` with item `number`'s status set to `new_status`, one line changed or inserted.

    Raises RoadmapItemNotFound when there is no such item and RoadmapEditError when the status is not one
    line or the result would not read back as intended.
    """
    value = _check_value(new_status)
    roadmap = parse_roadmap(text)
    item = roadmap.item(number)
    lines = text.split("\n")
    if item.status_line is not None:
        _rewrite(lines, item.status_line, value)
    else:
        _insert(lines, roadmap, item, value)
    result = "\n".join(lines)
    _check_result(roadmap, parse_roadmap(result), number, value)
    return result


def _check_result(before: Roadmap, after: Roadmap, number: str, value: str) -> None:
    """The edit must read back as that status on that item, with every item still there."""
    edited = after.get(number)
    same_items = [i.number for i in after] == [i.number for i in before]
    if edited is None or edited.status_text != value or not same_items:
        raise RoadmapEditError(
            f"setting the status of item {number} to '{value}' would change how ROADMAP.md reads; "
            "the file was left as it is")


def status_edit_conflicts(old_text: str, new_text: str, number: str) -> bool:
    """True when item `number`'s status differs between the text the daemon read and the current one.

    That means the author changed (or removed) this status themselves; their word wins over the daemon's.
    """
    old_item = parse_roadmap(old_text).get(number)
    new_item = parse_roadmap(new_text).get(number)
    if old_item is None or new_item is None:
        return old_item is not new_item
    return (old_item.status_text, old_item.status) != (new_item.status_text, new_item.status)


def reapply_status(read_text: str, current_text: str, number: str, new_status: str) -> str:
    """Apply a status edit planned on `read_text` to `current_text`, keeping the author's newer edits.

    Raises RoadmapEditConflict when the author changed this item's status in between.
    """
    if current_text != read_text and status_edit_conflicts(read_text, current_text, number):
        raise RoadmapEditConflict(
            f"ROADMAP.md item {number}: its status was changed by someone else since it was read; "
            f"left as they wrote it instead of writing '{new_status.strip()}'")
    return set_status(current_text, number, new_status)
