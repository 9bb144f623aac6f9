"""The CLI's private home inside the sandbox: one folder per tool under the daemon's state folder.

Why: claude and codex write their settings, sessions and caches under `~` (and `$CODEX_HOME`); inside the
sandbox the user's home is read-only, and a writable one would let the agent plant hooks or settings the
user's own CLI later runs outside any sandbox. So HOME (and each variable tools.yaml lists in `home_env`)
points into `<state dir>/sandbox/<tool>/`, owner-only, and the files the CLI needs from the user's home
(`credentials_files`, `home_files`) are copied in whenever the user's copy is newer. A fix round resumes
the same session because the folder outlives the run.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from conveyor.config.models import ToolSettings

SANDBOX_DIR = "sandbox"          # <state dir>/sandbox/<tool>/ : each tool's private home
_VARIABLE = re.compile(r"^\$(?:\{(\w+)\}|(\w+))")


def home_dir(state_dir: Path, tool_name: str) -> Path:
    return state_dir / SANDBOX_DIR / tool_name


def expand(pattern: str, env: Mapping[str, str]) -> Path | None:
    """`~/x` and `$VAR/x` against `env` (never the daemon's own environment); None when a name is unset."""
    if pattern == "~" or pattern.startswith("~/"):
        home = env.get("HOME")
        return Path(home + pattern[1:]) if home else None
    match = _VARIABLE.match(pattern)
    if match:
        value = env.get(match.group(1) or match.group(2))
        return Path(value + pattern[match.end():]) if value else None
    path = Path(pattern)
    return path if path.is_absolute() else None


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _moved(value: str, real_home: str | None, home: Path, name: str) -> Path:
    """Where a state folder named by `name` goes: the same place relative to the private home, or a
    folder of its own there when it was not under the user's home."""
    if real_home:
        relative = os.path.relpath(value, real_home)
        if not relative.startswith(os.pardir) and not os.path.isabs(relative):
            return home / relative
    return home / f".{name.lower()}"


def prepare(home: Path, tool: ToolSettings, env: Mapping[str, str], inside: Path | None = None) -> dict[str, str]:
    """Create the private home, copy in what the CLI needs, and return `env` pointed at it.

    `inside` is where the sandbox mounts `home` (default: the same path); the environment names that path."""
    inside = inside or home
    _private_dir(home)
    moved = dict(env)
    real_home = env.get("HOME")
    if real_home:
        moved["HOME"] = str(inside)
    for name in tool.home_env:
        value = env.get(name)
        if value:
            folder = _moved(value, real_home, inside, name)
            _private_dir(home / folder.relative_to(inside))
            moved[name] = str(folder)
    for pattern in (*tool.credentials_files, *tool.home_files):
        source, target = expand(pattern, env), expand(pattern, moved)
        if source is None or target is None or not source.is_file():
            continue
        if inside in target.parents:   # a file outside the private home is not ours to write
            _copy_if_newer(source, home / target.relative_to(inside), home)
    return moved


def _copy_if_newer(source: Path, target: Path, home: Path) -> None:
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return
    for parent in reversed(target.parents):
        if home in parent.parents:
            _private_dir(parent)
    shutil.copy2(source, target)
    target.chmod(0o600)
