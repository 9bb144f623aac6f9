"""Reading ROADMAP.md into items, in either of the two styles real roadmaps use.

Items are headings that carry a number and whose own section holds a status line:
- PRIORITY style: `### 🔴 **PRIORITY 3.5: Title** ⚡ NEW` with `**Status**: 📝 Planned`,
  `**Dependency**: Requires PRIORITY 1 (Analytics) completed`, `**Agent**: backend-dev`. A PRIORITY
  heading is an item even without a status line (its status is then `other`, reported as a problem).
- initiatives/phases style: `### 1. Initiative` with `**Status:** ...` and `#### Phase 2: Title` parts
  with `- Status: Not Started`, `- Dependencies: Phase 1 complete`, `- Assigned: Python Pedro`.

Numbering (unique and stable while the author keeps their own numbers): a PRIORITY number, a user story's
`US-056`, or any dotted number ("2.3 Title"), is used as written; a number written again by a later heading
is kept as `<number>_2`, `<number>_3`, ... in file order (and reported). A `Phase N`/`Step N`/`N.` heading
inside another item is numbered `<parent>.<N>` (phase 2 of initiative 1 is "1.2"), and `Phase N` in its
dependency line means a sibling. Outside any item it keeps N. When a derived number meets one as written,
the written one wins; the derived item (with its parts) is left out and reported. In a file that
has PRIORITY headings, plain `N.` headings count only inside a priority: such files often keep a
"Completed projects" list numbered 1, 2, ... that are not priorities.

The parser never raises on any text: what it cannot read becomes a problem, an `other` status or an
item the daemon will not start on its own. Headings inside code fences or HTML comments are ignored.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from conveyor.core.errors import Problem
from conveyor.roadmap.lines import (
    FENCE,
    HEADING,
    HeadingInfo,
    KeyLine,
    agent_name,
    dependency_refs,
    parse_heading,
    pr_url_in,
    role_of,
    split_key_line,
    task_id_in,
)
from conveyor.roadmap.model import ItemKind, Roadmap, RoadmapItem, Status, classify_status

__all__ = ["agent_name", "dependency_refs", "parse_roadmap", "split_key_line"]

# --- the document's structure -----------------------------------------------------------------------


@dataclass
class _Heading:
    index: int
    line: int
    level: int
    info: HeadingInfo | None
    parent: int | None  # the enclosing heading (any kind)
    end: int = 0  # first line after the section
    after: int = 0  # index of the first heading after the section


_Keys = dict[str, tuple[int, KeyLine]]  # role → (line index, the line cut up): the first line of each role


@dataclass
class _Scan:
    plain: list[str]
    ignored: list[bool]
    headings: list[_Heading]
    problems: list[Problem]


def _plain_lines(text: str) -> list[str]:
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    lines[0] = lines[0].removeprefix("\ufeff")
    return lines


def _fence_close(line: str, opener: str) -> bool:
    match = FENCE.match(line)
    return bool(match and match[1][0] == opener[0] and len(match[1]) >= len(opener) and not match[2].strip())


def _ignored_lines(plain: list[str], source: str) -> tuple[list[bool], list[Problem]]:
    """Lines inside code fences and HTML comments: what looks like a heading there is an example."""
    ignored = [False] * len(plain)
    opener: str | None = None
    opened_at = 0
    in_comment = False
    for number, line in enumerate(plain):
        if opener is not None:
            ignored[number] = True
            if _fence_close(line, opener):
                opener = None
        elif in_comment:
            ignored[number] = True
            in_comment = "-->" not in line
        elif (fence := FENCE.match(line)) and not (fence[1][0] == "`" and "`" in fence[2]):
            ignored[number], opener, opened_at = True, fence[1], number
        elif line.lstrip().startswith("<!--"):
            ignored[number] = True
            in_comment = "-->" not in line.split("<!--", 1)[1]
    problems = []
    if opener is not None:
        problems.append(Problem(source, "a code fence is never closed, so every heading after it is ignored",
                                fix=f"close it with a line '{opener}'", line=opened_at + 1))
    return ignored, problems


def _heading_text(content: str) -> str:
    """The text of an ATX heading without its optional closing hashes ("## Title ##")."""
    content = content.strip(" \t")
    bare = content.rstrip("#")
    if bare != content and (not bare or bare[-1] in " \t"):
        return bare.rstrip(" \t")
    return content


def _scan(text: str, source: str) -> _Scan:
    plain = _plain_lines(text)
    ignored, problems = _ignored_lines(plain, source)
    headings: list[_Heading] = []
    open_stack: list[_Heading] = []
    for number, line in enumerate(plain):
        match = None if ignored[number] else HEADING.match(line)
        if match is None:
            continue
        level = len(match[1])
        while open_stack and open_stack[-1].level >= level:
            closed = open_stack.pop()
            closed.end, closed.after = number, len(headings)
        raw = _heading_text(match[2] or "")
        parent = open_stack[-1].index if open_stack else None
        heading = _Heading(len(headings), number, level, parse_heading(raw), parent)
        headings.append(heading)
        open_stack.append(heading)
    for heading in open_stack:
        heading.end, heading.after = len(plain), len(headings)
    return _Scan(plain, ignored, headings, problems)


def _under_priority(scan: _Scan, heading: _Heading) -> bool:
    parent = heading.parent
    while parent is not None:
        info = scan.headings[parent].info
        if info is not None and info.kind is ItemKind.PRIORITY:
            return True
        parent = scan.headings[parent].parent
    return False


def _candidates(scan: _Scan) -> list[bool]:
    priority_style = any(h.info is not None and h.info.kind is ItemKind.PRIORITY for h in scan.headings)
    return [
        h.info is not None
        and not (priority_style and h.info.kind is ItemKind.NUMBERED and not _under_priority(scan, h))
        for h in scan.headings
    ]


def _own_ranges(scan: _Scan, index: int, is_item: list[bool]) -> tuple[list[tuple[int, int]], bool]:
    """The heading's section minus the sections of the items inside it; and whether it has any."""
    heading = scan.headings[index]
    ranges: list[tuple[int, int]] = []
    start, inner, has_items = heading.line + 1, index + 1, False
    while inner < heading.after:
        sub = scan.headings[inner]
        if is_item[inner]:
            ranges.append((start, sub.line))
            start, inner, has_items = sub.end, sub.after, True
        else:
            inner += 1
    ranges.append((start, heading.end))
    return ranges, has_items


def _key_lines(scan: _Scan, ranges: list[tuple[int, int]]) -> _Keys:
    keys: _Keys = {}
    for start, end in ranges:
        for number in range(start, end):
            if scan.ignored[number]:
                continue
            key_line = split_key_line(scan.plain[number])
            if key_line is not None:
                keys.setdefault(role_of(key_line), (number, key_line))
    return keys


def _find_items(scan: _Scan) -> dict[int, _Keys]:
    """Decide which headings are items, innermost first (a section's own lines exclude its items)."""
    candidate = _candidates(scan)
    is_item = [False] * len(scan.headings)
    keys: dict[int, _Keys] = {}
    for index in range(len(scan.headings) - 1, -1, -1):
        info = scan.headings[index].info
        if not candidate[index] or info is None:
            continue
        ranges, has_items = _own_ranges(scan, index, is_item)
        found = _key_lines(scan, ranges)
        if info.kind is ItemKind.PRIORITY or "status" in found or has_items:
            is_item[index] = True
            keys[index] = found
    return keys


# --- numbering and assembly -------------------------------------------------------------------------


@dataclass
class _Draft:
    heading: _Heading
    info: HeadingInfo
    keys: _Keys
    number: str
    rank: int  # 0: written and global, 1: written, 2: derived from the parent
    parent: _Draft | None
    children: list[str] = field(default_factory=list)
    status: Status = Status.OTHER
    status_text: str = ""
    status_line: int | None = None


def _drafts(scan: _Scan, keys: dict[int, _Keys], source: str, problems: list[Problem]) -> list[_Draft]:
    drafts: list[_Draft] = []
    stack: list[_Draft] = []
    written: dict[str, list[_Heading]] = {}   # number as written → the items that wrote it, in file order
    for index in sorted(keys):
        heading = scan.headings[index]
        info = heading.info
        assert info is not None
        while stack and stack[-1].heading.end <= heading.line:
            stack.pop()
        # Priorities are numbered across the file, so one is never a part of another whatever the levels.
        parent = stack[-1] if stack and info.kind is not ItemKind.PRIORITY else None
        if info.kind is ItemKind.PRIORITY or "." in info.written:
            number, rank = info.written, 0
        elif parent is None:
            number, rank = info.written, 1
        else:
            number, rank = f"{parent.number}.{info.written}", 2
        if rank < 2:
            same = written.setdefault(number, [])
            if same:   # a number written again (real roadmaps do): kept, under `<number>_<n>` in file order
                first = same[0].line + 1
                number = f"{number}_{len(same) + 1}"
                problems.append(Problem(
                    source, f"item number {info.written} ('{info.title}') is also used at line {first}; this one "
                    f"is listed as {number}", fix="give each item its own number", line=heading.line + 1))
            same.append(heading)
        draft = _Draft(heading, info, keys[index], number, rank, parent)
        drafts.append(draft)
        stack.append(draft)
    return drafts


def _unique(drafts: list[_Draft], source: str) -> tuple[list[_Draft], list[Problem]]:
    """One item per number: written beats derived, then the first in the file wins."""
    best: dict[str, _Draft] = {}
    for draft in drafts:
        held = best.get(draft.number)
        if held is None or draft.rank < held.rank:
            best[draft.number] = draft
    kept: list[_Draft] = []
    dropped: set[int] = set()
    problems: list[Problem] = []
    for draft in drafts:
        if draft.parent is not None and id(draft.parent) in dropped:
            dropped.add(id(draft))
        elif best[draft.number] is not draft:
            dropped.add(id(draft))
            winner = best[draft.number].heading.line + 1
            problems.append(Problem(
                source, f"item number {draft.number} ('{draft.info.title}') is also used at line {winner}; "
                "this one and its parts are ignored", fix="give each item its own number",
                line=draft.heading.line + 1))
        else:
            kept.append(draft)
    return kept, problems


def _set_status(draft: _Draft, source: str, problems: list[Problem]) -> None:
    entry = draft.keys.get("status")
    if entry is not None:
        draft.status_line, draft.status_text = entry[0], entry[1].value
        draft.status = classify_status(entry[1].value)
    elif draft.info.tags and classify_status(draft.info.tags) is not Status.OTHER:
        draft.status_text = draft.info.tags  # "### Priority 3.5: Title ✅ DONE" with no status line
        draft.status = classify_status(draft.info.tags)
    elif not draft.children and draft.info.kind is ItemKind.PRIORITY:
        problems.append(Problem(
            source, f"PRIORITY {draft.number} has no status line, so it will not be started",
            fix="add a line '**Status**: 📝 Planned' under its heading", line=draft.heading.line + 1))


def _derived_status(parts: list[Status]) -> Status:
    """A container without its own status line is as far along as its parts (unknown ones aside)."""
    children = [status for status in parts if status is not Status.OTHER]
    if not children:
        return Status.OTHER
    if all(s is Status.COMPLETED for s in children):
        return Status.COMPLETED
    if all(s is Status.PLANNED for s in children):
        return Status.PLANNED
    if any(s in (Status.IN_PROGRESS, Status.IN_REVIEW, Status.COMPLETED) for s in children):
        return Status.IN_PROGRESS
    return Status.BLOCKED if Status.BLOCKED in children else Status.OTHER


def _resolve_dependencies(draft: _Draft) -> tuple[tuple[str, ...], str | None, bool]:
    entry = draft.keys.get("deps")
    if entry is None:
        return (), None, True
    text = entry[1].value
    refs = dependency_refs(text)
    if refs is None:
        return (), text, False
    own_mode = "rel" if draft.rank == 2 else "abs"
    parent = draft.parent.number if draft.parent is not None else None
    numbers: list[str] = []
    for mode, number in refs:
        relative = (own_mode if mode == "own" else mode) == "rel"
        resolved = f"{parent}.{number}" if relative and parent is not None and "." not in number else number
        if resolved != draft.number and resolved not in numbers:
            numbers.append(resolved)
    return tuple(numbers), text, True


def _body(scan: _Scan, heading: _Heading, stops: list[int]) -> str:
    """The section's text, up to the next priority heading even when that one sits deeper."""
    after = bisect.bisect_right(stops, heading.line)
    end = min(heading.end, stops[after]) if after < len(stops) else heading.end
    lines = scan.plain[heading.line + 1: end]
    while lines and (not lines[-1].strip() or re.fullmatch(r"\s*([-*_])(\s*\1){2,}\s*", lines[-1])):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def _freeze(draft: _Draft, scan: _Scan, stops: list[int]) -> RoadmapItem:
    dependencies, dependency_text, understood = _resolve_dependencies(draft)
    agent_entry = draft.keys.get("agent")
    return RoadmapItem(
        number=draft.number, title=draft.info.title, status=draft.status, status_text=draft.status_text,
        heading_line=draft.heading.line, status_line=draft.status_line, kind=draft.info.kind,
        level=draft.heading.level, dependencies=dependencies, dependency_text=dependency_text,
        dependencies_understood=understood,
        agent=agent_name(agent_entry[1].value) if agent_entry else None,
        task_id=task_id_in(draft.status_text), pr_url=pr_url_in(draft.status_text),
        body=_body(scan, draft.heading, stops), parent=draft.parent.number if draft.parent else None,
        children=tuple(draft.children),
    )


def parse_roadmap(text: str, *, source: str = "ROADMAP.md") -> Roadmap:
    """Read a roadmap; `source` names the file in problems (whose line numbers are 1-based)."""
    scan = _scan(text, source)
    renamed: list[Problem] = []
    kept, problems = _unique(_drafts(scan, _find_items(scan), source, renamed), source)
    problems = renamed + problems
    by_number = {draft.number: draft for draft in kept}
    for draft in kept:
        if draft.parent is not None:
            draft.parent.children.append(draft.number)
    for draft in reversed(kept):  # parts first, so containers can take their status from them
        _set_status(draft, source, problems)
        if draft.status_line is None and not draft.status_text and draft.children:
            draft.status = _derived_status([by_number[number].status for number in draft.children])
    problems = sorted(scan.problems + problems, key=lambda p: p.line or 0)
    stops = [d.heading.line for d in kept if d.info.kind is ItemKind.PRIORITY]
    return Roadmap(items=tuple(_freeze(d, scan, stops) for d in kept), problems=tuple(problems))
