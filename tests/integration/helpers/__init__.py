"""Tiny real executables that stand in for agent CLIs in tests (no mocks: they really run).

Each script is standalone Python with no imports from the project, so it runs under any environment a test
hands it. Run one as `helper_argv("emit.py", "100")`, or `install(...)` a copy with its own shebang when a
test needs a binary path, as tools.yaml would name it.
"""

from __future__ import annotations

import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent


def helper_path(name: str) -> Path:
    """Absolute path of a helper script in this folder."""
    path = HELPERS / name
    if not path.is_file():
        raise FileNotFoundError(f"no test helper named {name}; see {HELPERS}")
    return path


def helper_argv(name: str, *args: str) -> list[str]:
    """An argv that runs the helper with this interpreter (absolute paths, no PATH lookup)."""
    return [sys.executable, str(helper_path(name)), *args]


def install(name: str, dest_dir: Path, *, as_name: str | None = None, executable: bool = True) -> Path:
    """Copy a helper into `dest_dir` with a shebang naming this interpreter; returns the new path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (as_name or Path(name).stem)
    target.write_text(f"#!{sys.executable}\n" + helper_path(name).read_text())
    target.chmod(0o755 if executable else 0o644)
    return target
