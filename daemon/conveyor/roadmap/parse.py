"""Reading ROADMAP.md into items, in either of the two styles real roadmaps use.

Items are headings that carry a number and whose own section holds a status line:
- PRIORITY style: `### 🔴 **PRIORITY 3.5: Title** ⚡ NEW` with `**Status**: 📝 Planned`,
  `**Dependency**: Requires PRIORITY 1 (Analytics) completed`, `**Agent**: backend-dev`. A PRIORITY
  heading is an item even without a status line (its status is then `other`, reported as a problem).
- initiatives/phases style: `### 1. Initiative` with `**Status:** ...` and `#### Phase 2: Title` parts
  with `- Status: Not Started`, `- Dependencies: Phase 1 complete`, `- Assigned: Python Pedro`.

Numbering (unique and stable while the author keeps their own numbers): a PRIORITY number, or any dotted
number ("2.3 Title"), is used as written. A `Phase N`/`Step N`/`N.` heading inside another item is numbered
`<parent>.<N>` (phase 2 of initiative 1 is "1.2"), and `Phase N` in its dependency line means a sibling.
Outside any item it keeps N. When two items end up with one number, a number as written beats a derived
one, then the first in the file wins; the other (with its parts) is left out and reported. In a file that
has PRIORITY headings, plain `N.` headings count only inside a priority: such files often keep a
"Completed projects" list numbered 1, 2, ... that are not priorities.

The parser never raises on any text: what it cannot read becomes a problem, an `other` status or an
item the daemon will not start on its own. Headings inside code fences or HTML comments are ignored.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from dataclasses import dataclass, field

from conveyor.errors import Problem
from conveyor.roadmap.model import (
    SAFE_NAME,
    ItemKind,
    Roadmap,
    RoadmapItem,
    Status,
    classify_status,
    is_status_phrase,
)

# --- one line at a time ------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)*"
_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?\Z")  # no backtracking over long lines
_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)\Z")
_KEY = re.compile(
    r"(?P<lead>[ \t]{0,3}(?:[-*+][ \t]+)?)(?P<open>\*\*|__|\*|_)?"
    r"(?P<key>[A-Za-z][A-Za-z \t]{0,30}?)(?P<close>\*\*|__|\*|_)?[ \t]*:(?P<after>\*\*|__|\*|_)?[ \t]*"
)
_ROLES = {
    "status": "status", "state": "status", "current status": "status",
    "dependency": "deps", "dependencies": "deps", "depends on": "deps", "depends": "deps",
    "requires": "deps", "prerequisite": "deps", "prerequisites": "deps", "blocked by": "deps",
    "agent": "agent", "agents": "agent", "assigned": "agent", "assigned to": "agent", "assignee": "agent",
    "assignees": "agent", "assigned agent": "agent",
}


@dataclass(frozen=True)
class KeyLine:
    """A `**Key**: value` line cut so that `prefix + value + suffix` is the line (without its newline)."""

    key: str
    prefix: str
    value: str
    suffix: str


def split_key_line(line: str) -> KeyLine | None:
    """Cut a metadata line into its parts; the editor rewrites only `value`, keeping every marker."""
    match = _KEY.match(line)
    if match is None:
        return None
    key = " ".join(match["key"].lower().split())
    if key not in _ROLES:
        return None
    rest = line[match.end():]
    value = rest.rstrip()
    opener = match["open"]
    if opener and not match["close"] and not match["after"] and value.endswith(opener) and len(value) > 1:
        value = value[: -len(opener)].rstrip()  # "**Status: Planned**": the closer belongs to the line
    return KeyLine(key=key, prefix=line[: match.end()], value=value, suffix=rest[len(value):])


def role_of(key_line: KeyLine) -> str:
    """"status", "deps" or "agent"."""
    return _ROLES[key_line.key]


# --- headings ---------------------------------------------------------------------------------------

_INVISIBLE = frozenset("\u200d\ufe0f\ufe0e\u20e3")
_BOLD_SPAN = re.compile(r"(\*\*|__)(.+?)\1")
_PREFIX_ONLY = re.compile(rf"(?:(?:priority|phase|step|stage)\s*#?\s*)?(?:{_NUM})?\s*[:.)\-–—]*\s*\Z", re.I)
_PRIORITY_HEAD = re.compile(rf"priority\s*#?\s*({_NUM})\b\s*[:.)\-–—]*\s*(.*)\Z", re.I)
_PHASE_HEAD = re.compile(rf"(?:phase|step|stage)\s*#?\s*({_NUM})\b\s*[:.)\-–—]*\s*(.*)\Z", re.I)
_NUMBERED_HEAD = re.compile(rf"({_NUM})(?:[.):]|\s+[-–—:])\s+(.*)\Z")
_DOTTED_HEAD = re.compile(r"(\d+(?:\.\d+)+)\s+(.*)\Z")
_NEW_TAG = re.compile(r"\s*(?:\((?i:new)\)|\[(?i:new)\]|\bNEW)\s*\Z")
_TRAILING_PART = re.compile(r"(?:\s+[-–—|:]\s+([^-–—|:]+)|\s*\(([^()]*)\))\s*\Z")


def _is_emoji(char: str) -> bool:
    """Pictographs and their joiners; ASCII symbols such as ` and ^ are text, not decoration."""
    if char in _INVISIBLE or 0xE0000 <= ord(char) <= 0xE007F:
        return True
    return ord(char) >= 0x2000 and unicodedata.category(char) in ("So", "Sk")


def _drop_emoji(text: str) -> str:
    return "".join(" " if _is_emoji(char) else char for char in text)


def _core_and_tags(raw: str) -> tuple[str, str]:
    """Split `🔴 **PRIORITY 2: Title** ⚡ NEW` into the title part and the decorations after it."""
    match = _BOLD_SPAN.search(raw)
    if match is not None:
        before = " ".join(_drop_emoji(raw[: match.start()]).split())
        after = raw[match.end():].strip()
        if _PREFIX_ONLY.match(before) and (not after or _is_emoji(after[0]) or after[0] in "([-–—|"):
            return f"{before} {match[2]}", raw[match.end():]
    start = 0
    while start < len(raw) and (_is_emoji(raw[start]) or raw[start] in " \t*_"):
        start += 1
    for index in range(start, len(raw)):
        if _is_emoji(raw[index]):  # "Title ✅ COMPLETE": what follows the first pictograph is decoration
            return raw[:index], raw[index:]
    return raw, ""


def _clean_title(title: str) -> tuple[str, str]:
    """Remove "NEW" markers and a trailing status ("- PARTIALLY COMPLETE"); return (title, removed)."""
    removed: list[str] = []
    for _ in range(4):
        before = title
        title = _NEW_TAG.sub("", title)
        match = _TRAILING_PART.search(title)
        if match is not None and is_status_phrase(match[1] or match[2] or ""):
            removed.insert(0, match[1] or match[2] or "")
            title = title[: match.start()]
        if title == before:
            break
    return title.strip(" \t-–—:|"), " ".join(removed)


@dataclass(frozen=True)
class _HeadingInfo:
    kind: ItemKind
    written: str
    title: str
    tags: str


def _normalise_number(number: str) -> str:
    """"03.50" → "3.50": leading zeros only, so "PRIORITY 03" and "Requires PRIORITY 3" meet."""
    return ".".join(part.lstrip("0") or "0" for part in number.split("."))


def parse_heading(raw: str) -> _HeadingInfo | None:
    """The kind, number, clean title and trailing decorations of a heading's text, or None."""
    core, tags = _core_and_tags(raw)
    text = " ".join(_drop_emoji(core).replace("**", " ").replace("__", " ").split())
    for pattern, kind in ((_PRIORITY_HEAD, ItemKind.PRIORITY), (_PHASE_HEAD, ItemKind.PHASE),
                          (_NUMBERED_HEAD, ItemKind.NUMBERED), (_DOTTED_HEAD, ItemKind.NUMBERED)):
        match = pattern.match(text)
        if match is not None:
            title, removed = _clean_title(match[2])
            return _HeadingInfo(kind, _normalise_number(match[1]), title, f"{removed} {tags}".strip())
    return None


# --- dependency lines and agent names ---------------------------------------------------------------

_MARKUP = re.compile(r"\*\*|__|`")
_PARENS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")
_TOKEN = re.compile(r"(?P<num>#?\d+(?:\.\d+)*)|(?P<word>[^\W\d_]+)|(?P<sep>\.\.|[,;&+/\-–—])")
_ABSOLUTE_WORDS = frozenset({"priority", "priorities", "initiative", "initiatives", "item", "items"})
_RELATIVE_WORDS = frozenset({"phase", "phases", "step", "steps", "stage", "stages"})
_LIST_WORDS = frozenset({"and", "or", ",", ";", "&", "+", "/"})
_RANGE_WORDS = frozenset({"to", "through", "thru", "-", "–", "—", ".."})
_NONE = re.compile(r"\s*(?:none|n/a|nothing|no\s+dependenc\w*|independent|standalone)\b|\s*[-–—]*\s*\Z",
                   re.I)
_MAX_RANGE = 50


def _without_parentheses(text: str) -> str:
    for _ in range(8):
        stripped = _PARENS.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return text


def _expand(first: str, last: str) -> list[str] | None:
    """"2-4" → 3, 4 (2 is already listed); None for what is not a range (dates, dotted numbers)."""
    if "." in first or "." in last or len(first) > 6 or len(last) > 6:
        return None
    start, end = int(first), int(last)
    if not 0 < end - start <= _MAX_RANGE:
        return None
    return [str(n) for n in range(start + 1, end + 1)]


def _tokens(text: str) -> list[tuple[str, str]]:
    return [(m.lastgroup or "", m[0].lower()) for m in _TOKEN.finditer(text)]


def _is_bare_list(tokens: list[tuple[str, str]]) -> bool:
    """"1, 2.5" or "#3 and #4": numbers with nothing else, read in the item's own numbering."""
    allowed = _LIST_WORDS | _RANGE_WORDS
    return any(kind == "num" for kind, _ in tokens) and all(
        kind == "num" or value in allowed for kind, value in tokens)


def _refs_in(text: str) -> list[tuple[str, str]]:
    """(mode, number) pairs: mode "abs" (PRIORITY 1), "rel" (Phase 2) or "own" (a bare list)."""
    tokens = _tokens(text)
    mode: str | None = "own" if _is_bare_list(tokens) else None
    refs: list[tuple[str, str]] = []
    ranging = False
    for kind, value in tokens:
        if kind == "num":
            number = _normalise_number(value.lstrip("#"))
            numbers = _expand(refs[-1][1], number) if ranging and refs else [number]
            if numbers is None:
                mode = None  # "PRIORITY 2026-01-05": a date, not a list
            elif mode is not None:
                refs.extend((mode, n) for n in numbers)
            ranging = False
        elif value in _RANGE_WORDS:
            ranging = True
        else:
            ranging = False
            if value in _ABSOLUTE_WORDS:
                mode = "abs"
            elif value in _RELATIVE_WORDS:
                mode = "rel"
            elif value not in _LIST_WORDS:
                mode = None  # "Phase 1 complete and Python 3.11": "complete" ends the list
    return refs


def dependency_refs(text: str) -> list[tuple[str, str]] | None:
    """The item references in a dependency line; [] for "None"; None when it names nothing readable."""
    plain = _MARKUP.sub(" ", text)
    if _NONE.match(plain):
        return []
    refs = _refs_in(_without_parentheses(plain)) or _refs_in(plain)
    return refs or None


_AGENT_SPLIT = re.compile(r",|;|/|\+|&|\band\b|\s[-–—]\s|:", re.I)
_PLACEHOLDERS = frozenset({"tbd", "tba", "none", "unassigned", "n-a", "na", "any", "anyone", "nobody",
                           "todo"})


def agent_name(value: str) -> str | None:
    """The first agent named, as an id: "Architect Alphonso (tactic doc), Python Pedro" → architect-alphonso.

    Rule: drop markup and parenthesised notes, take the first of a list (",", ";", "/", "&", "and"),
    fold accents, lowercase, and join words with "-". Placeholders ("TBD", "unassigned") give None.
    """
    first = _AGENT_SPLIT.split(_without_parentheses(_MARKUP.sub(" ", value)))[0]
    folded = unicodedata.normalize("NFKD", first)
    ascii_only = "".join(c for c in folded if not unicodedata.combining(c)).lower().strip().lstrip("@")
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.-]+", "-", ascii_only)).strip("-.")
    if not name or name in _PLACEHOLDERS or SAFE_NAME.fullmatch(name) is None:
        return None
    return name


_TASK_ID = re.compile(r"\(\s*task\s*[:#]?\s*([A-Za-z0-9][A-Za-z0-9._-]{0,127})\s*\)", re.I)
_URL = re.compile(r"https?://[^\s()<>\[\]\"']+")


def task_id_in(status_text: str) -> str | None:
    match = _TASK_ID.search(status_text)
    return match[1] if match else None


def pr_url_in(status_text: str) -> str | None:
    match = _URL.search(status_text)
    return match[0].rstrip(".,;:") if match else None


# --- the document's structure -----------------------------------------------------------------------


@dataclass
class _Heading:
    index: int
    line: int
    level: int
    info: _HeadingInfo | None
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
    match = _FENCE.match(line)
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
        elif (fence := _FENCE.match(line)) and not (fence[1][0] == "`" and "`" in fence[2]):
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
        match = None if ignored[number] else _HEADING.match(line)
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
    info: _HeadingInfo
    keys: _Keys
    number: str
    rank: int  # 0: written and global, 1: written, 2: derived from the parent
    parent: _Draft | None
    children: list[str] = field(default_factory=list)
    status: Status = Status.OTHER
    status_text: str = ""
    status_line: int | None = None


def _drafts(scan: _Scan, keys: dict[int, _Keys]) -> list[_Draft]:
    drafts: list[_Draft] = []
    stack: list[_Draft] = []
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
    kept, problems = _unique(_drafts(scan, _find_items(scan)), source)
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
