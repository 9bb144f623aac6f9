"""The one YAML module: safe loading with limits, ordered dumping, and atomic writes.

Task files are written by people and by other agents, so loading must survive hostile input: a size cap,
`O_NOFOLLOW` and regular-file checks (a FIFO must never block us), no timestamp coercion (values stay as
the author wrote them), and a bound on the expanded size and depth of the document (a YAML "billion
laughs" bomb is cheap to load with shared aliases but explodes when anything walks it).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000
MAX_DEPTH = 64

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseDumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Safe loader that keeps timestamps and dates as the strings the author wrote."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Dumper(_BaseDumper):  # type: ignore[misc,valid-type]
    """Block-style dumper: multi-line strings as `|` blocks, keys in insertion order."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(ch in value for ch in "\t\r") and value == value.rstrip(" "):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


class YamlProblem(Exception):
    """Why a document was refused, with the line (1-based) when the parser knows it."""

    def __init__(self, message: str, line: int | None = None, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.fix = fix


class StillBeingWritten(Exception):
    """`read_limited(..., busy=...)` found another process holding the file open for writing."""


def read_limited(path: Path, max_bytes: int = MAX_FILE_BYTES, *,
                 busy: Callable[[int], bool | None] | None = None) -> bytes:
    """Read a regular file without following symlinks or blocking on FIFOs; refuse files over `max_bytes`.

    `busy(fd)`, asked before reading, raises StillBeingWritten when it answers True: the check and the
    read then see the same file, even if another one is renamed over the path in between.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise YamlProblem("is a symbolic link", fix="put the task file itself in the folder") from exc
        raise YamlProblem(f"cannot be opened ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlProblem("is not a regular file", fix="only plain YAML files belong here")
        if busy is not None and busy(fd):
            raise StillBeingWritten(str(path))
        if info.st_size > max_bytes:
            raise YamlProblem(f"is {info.st_size} bytes, over the {max_bytes}-byte limit",
                              fix="move long material into the repository and reference it by path")
        chunks: list[bytes] = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise YamlProblem(f"grew over the {max_bytes}-byte limit while being read")
    return data


def loads(data: bytes | str) -> Any:
    """Parse one YAML document safely; raise YamlProblem with the line on any problem."""
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise YamlProblem("holds binary data (NUL bytes)", fix="task files must be UTF-8 text")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise YamlProblem(f"is not valid UTF-8 (byte {exc.start})", fix="save the file as UTF-8") from exc
    else:
        text = data
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem or ""):   # PyYAML >= 6.0.3 stops deep nesting itself
            raise YamlProblem("is nested too deeply", fix=f"keep nesting under {MAX_DEPTH} levels") from exc
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        raise YamlProblem(f"is not valid YAML: {problem}", line=line,
                          fix="fix the syntax at that line (quote values that contain ': ', '*' or '&')") from exc
    except yaml.YAMLError as exc:
        raise YamlProblem(f"is not valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise YamlProblem("is nested too deeply", fix=f"keep nesting under {MAX_DEPTH} levels") from exc
    check_bounded(document)
    return document


def read_mapping(path: Path) -> dict[str, Any] | None:
    """The file's document when it is a YAML mapping; None when it cannot be read, is not valid YAML or is
    not a mapping (for readers that skip such a file: the reader that owns it reports the problem)."""
    try:
        document = loads(read_limited(path))
    except (YamlProblem, OSError):
        return None
    return document if isinstance(document, dict) else None


def check_bounded(document: Any, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse documents whose expanded size or depth is excessive (alias bombs, pathological nesting).

    Shared alias nodes are counted each time they are reachable, which is what anything walking the
    document would pay; the walk stops as soon as the budget is spent, so the check itself stays cheap.
    """
    budget = [max_nodes]
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise YamlProblem(f"expands to more than {max_nodes} values (an alias bomb?)",
                              fix="remove repeated aliases (*name) and keep the task small")
        if depth > max_depth:
            raise YamlProblem(f"is nested deeper than {max_depth} levels", fix="flatten the structure")
        if isinstance(node, Mapping):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)


def dumps(document: Any) -> str:
    """Dump in block style, keys in insertion order, unicode kept, long lines not folded."""
    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=10_000)
    return text


def fsync_dir(directory: Path) -> None:
    """Make a rename or creation in `directory` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


NEW_FILE_MODE = 0o644   # a board file people read and commit, like WORKFLOW_LOG.md


def atomic_write(path: Path, data: bytes | str, *, durable: bool = True) -> None:
    """Write via a temporary file in the same folder, fsync it, rename over `path`, fsync the folder.

    A reader (or a crash) sees the old content or the new, never a half-written file. The temporary
    name starts with a dot so the inbox scanner ignores it.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:   # mkstemp makes 0600: keep the file's own mode, or give a new one the usual 0644
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = NEW_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if durable:
        fsync_dir(path.parent)


def write_yaml(path: Path, document: Any, *, durable: bool = True) -> None:
    """Dump `document` and write it atomically."""
    atomic_write(path, dumps(document), durable=durable)
