"""Reading ROADMAP.md one line at a time: key lines, headings, dependency phrases and agent names.

`parse.py` assembles these into items; everything here looks at a single line and never raises.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from conveyor.roadmap.model import SAFE_NAME, ItemKind, is_status_phrase, strip_parentheses

# --- one line at a time ------------------------------------------------------------------------------

_NUM = r"\d+(?:\.\d+)*"
HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*))?\Z")  # no backtracking over long lines
FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)\Z")
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
_STORY_HEAD = re.compile(r"(US-\d+)\s*:\s*(.*)\Z", re.I)   # `## US-056: Title`: a user story, numbered US-056
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
class HeadingInfo:
    kind: ItemKind
    written: str
    title: str
    tags: str


def _normalise_number(number: str) -> str:
    """"03.50" → "3.50": leading zeros only, so "PRIORITY 03" and "Requires PRIORITY 3" meet."""
    return ".".join(part.lstrip("0") or "0" for part in number.split("."))


def parse_heading(raw: str) -> HeadingInfo | None:
    """The kind, number, clean title and trailing decorations of a heading's text, or None."""
    core, tags = _core_and_tags(raw)
    text = " ".join(_drop_emoji(core).replace("**", " ").replace("__", " ").split())
    story = _STORY_HEAD.match(text)
    for pattern, kind in ((_PRIORITY_HEAD, ItemKind.PRIORITY), (_STORY_HEAD, ItemKind.PRIORITY),
                          (_PHASE_HEAD, ItemKind.PHASE), (_NUMBERED_HEAD, ItemKind.NUMBERED),
                          (_DOTTED_HEAD, ItemKind.NUMBERED)):
        match = pattern.match(text)
        if match is not None:
            title, removed = _clean_title(match[2])
            number = match[1].upper() if match is story else _normalise_number(match[1])
            return HeadingInfo(kind, number, title, f"{removed} {tags}".strip())
    return None


# --- dependency lines and agent names ---------------------------------------------------------------

_MARKUP = re.compile(r"\*\*|__|`")
_TOKEN = re.compile(r"(?P<num>#?\d+(?:\.\d+)*)|(?P<word>[^\W\d_]+)|(?P<sep>\.\.|[,;&+/\-–—])")
_ABSOLUTE_WORDS = frozenset({"priority", "priorities", "initiative", "initiatives", "item", "items"})
_RELATIVE_WORDS = frozenset({"phase", "phases", "step", "steps", "stage", "stages"})
_LIST_WORDS = frozenset({"and", "or", ",", ";", "&", "+", "/"})
_RANGE_WORDS = frozenset({"to", "through", "thru", "-", "–", "—", ".."})
_NONE = re.compile(r"\s*(?:none|n/a|nothing|no\s+dependenc\w*|independent|standalone)\b|\s*[-–—]*\s*\Z",
                   re.I)
_MAX_RANGE = 50


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
    refs = _refs_in(strip_parentheses(plain)) or _refs_in(plain)
    return refs or None


_AGENT_SPLIT = re.compile(r",|;|/|\+|&|\band\b|\s[-–—]\s|:", re.I)
_PLACEHOLDERS = frozenset({"tbd", "tba", "none", "unassigned", "n-a", "na", "any", "anyone", "nobody",
                           "todo"})


def agent_name(value: str) -> str | None:
    """The first agent named, as an id: "Architect Alphonso (tactic doc), Python Pedro" → architect-alphonso.

    Rule: drop markup and parenthesised notes, take the first of a list (",", ";", "/", "&", "and"),
    fold accents, lowercase, and join words with "-". Placeholders ("TBD", "unassigned") give None.
    """
    first = _AGENT_SPLIT.split(strip_parentheses(_MARKUP.sub(" ", value)))[0]
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


