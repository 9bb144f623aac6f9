"""Which changed paths an agent's change may not touch: `.git`, the task board, the roadmap files, and
anything outside the task's allowed globs.

The board and the roadmap are the daemon's own state, and `.git` is the repository itself; an agent that
edits them could claim tasks, mark work completed or plant hooks. Checks err on the side of refusing:
names are compared case-insensitively (macOS and Windows checkouts), `..` is resolved before comparing,
a path that escapes the repository is refused, and with `root` given each path is also resolved
through symbolic links, so a link pointing into `.git` or the board is refused like the real path.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

_GIT_DIR_NAMES = frozenset({".git", "git~1"})  # git~1: the 8.3 short name NTFS gives ".git"
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class PathViolation:
    """A changed path the gate refuses, and why, in words for the task's error block."""

    path: str
    reason: str


def check_paths(
    changed: Iterable[str],
    *,
    board_dir: str,
    roadmap_files: Sequence[str],
    allowed_globs: Sequence[str] | None,
    root: Path | None = None,
) -> list[PathViolation]:
    """Each refused path with its reason. `allowed_globs=None` allows everything else; `[]` nothing.

    Globs are relative to the repository root: `*` and `?` stay within one path segment, `**` spans
    segments, a trailing `/` means everything below, and a glob without `/` matches the name at any
    depth (as in .gitignore).
    """
    rules = _Rules.build(board_dir, roadmap_files, allowed_globs)
    seen: set[str] = set()
    violations: list[PathViolation] = []
    for path in changed:
        if path in seen:
            continue
        seen.add(path)
        reason = _reason(path, rules, root)
        if reason is not None:
            violations.append(PathViolation(path, reason))
    return violations


def render_violations(violations: Sequence[PathViolation]) -> str:
    """The task's error text: every refused path with its reason."""
    if not violations:
        return ""
    lines = ["The change touches paths a task may not change, so nothing was committed:"]
    lines += [f"  {violation.path}: {violation.reason}" for violation in violations]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Rules:
    board: str
    board_dir: str
    roadmaps: frozenset[str]
    globs: tuple[str, ...] | None

    @classmethod
    def build(cls, board_dir: str, roadmap_files: Sequence[str], globs: Sequence[str] | None) -> _Rules:
        board = normalize(board_dir)
        if board is None:
            raise ValueError(f"board_dir must be a path inside the repository, not {board_dir!r}")
        roadmaps = {normalize(name) for name in roadmap_files}
        return cls(
            board=board.casefold(),
            board_dir=board,
            roadmaps=frozenset(name.casefold() for name in roadmaps if name is not None),
            globs=None if globs is None else tuple(globs),
        )


def normalize(path: str) -> str | None:
    """The repository-relative POSIX form of `path`, or None if it is absolute or escapes the root.

    Backslashes count as separators: on Linux they are legal in names, but a name like
    `work\\collaboration\\x` is exactly the kind of trick a conservative check should see through.
    """
    text = path.replace("\\", "/").strip()
    if not text or text.startswith("/") or _DRIVE.match(text):
        return None
    normal = posixpath.normpath(text)
    if normal in (".", "..") or normal.startswith("../"):
        return None
    return normal


def _reason(path: str, rules: _Rules, root: Path | None) -> str | None:
    normal = normalize(path)
    if normal is None:
        return "is not a path inside the repository"
    reason = _protected_reason(normal, rules)
    if reason is None and root is not None:
        reason = _link_reason(root, normal, rules)
    if reason is None and rules.globs is not None and not _allowed(normal, rules.globs):
        reason = "is outside the paths this task may change"
    return reason


def _protected_reason(normal: str, rules: _Rules) -> str | None:
    if any(part.rstrip(". ").casefold() in _GIT_DIR_NAMES for part in normal.split("/")):
        return "is inside the .git directory"
    folded = normal.casefold()
    if folded == rules.board or folded.startswith(rules.board + "/"):
        return f"is on the task board ({rules.board_dir}/), which only the daemon changes"
    if folded in rules.roadmaps:
        return "is a roadmap file, which only the daemon and people change"
    return None


def _link_reason(root: Path, normal: str, rules: _Rules) -> str | None:
    """Resolve symbolic links under `root` and judge where the path really lands."""
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, normal))
    if target != real_root and not target.startswith(real_root.rstrip(os.sep) + os.sep):
        return "leads outside the repository through a symbolic link"
    landed = os.path.relpath(target, real_root).replace(os.sep, "/")
    if landed == normal:
        return None
    if landed == ".":
        return "leads to the repository root through a symbolic link"
    reason = _protected_reason(landed, rules)
    return None if reason is None else f"leads to {landed} through a symbolic link, which {reason}"


def _allowed(normal: str, globs: Sequence[str]) -> bool:
    return any(_glob_regex(glob).match(normal) for glob in globs)


@functools.lru_cache(maxsize=256)
def _glob_regex(glob: str) -> re.Pattern[str]:
    """Compile a repository glob once; compiled patterns are immutable, so caching them is safe."""
    pattern = glob.strip().replace("\\", "/")
    while pattern.startswith(("./", "/")):
        pattern = pattern[1:] if pattern.startswith("/") else pattern[2:]
    if pattern.endswith("/"):
        pattern += "**"
    anywhere = "" if "/" in pattern else "(?:.*/)?"
    return re.compile(f"^{anywhere}{_translate(pattern)}$")


def _translate(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:[^/]*/)*")
            index += 3
        elif pattern.startswith("/**", index) and index + 3 == len(pattern):
            out.append("(?:/.*)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        else:
            piece, index = _translate_one(pattern, index)
            out.append(piece)
    return "".join(out)


def _translate_one(pattern: str, index: int) -> tuple[str, int]:
    char = pattern[index]
    if char == "*":
        return "[^/]*", index + 1
    if char == "?":
        return "[^/]", index + 1
    if char == "[":
        end = pattern.find("]", index + 2)
        if end != -1:
            body = pattern[index + 1:end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            return f"(?!/)[{body}]", end + 1
    return re.escape(char), index + 1
