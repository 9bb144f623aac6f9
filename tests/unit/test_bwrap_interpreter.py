"""A CLI that is a script run by an interpreter in a folder the sandbox covers (a virtualenv under /tmp,
as in a clone checked out there) still starts: its interpreter and virtualenv are bound read-only."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.runner.bwrap import interpreter_paths, needed_paths


def test_a_scripts_virtualenv_interpreter_is_made_visible(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = venv / "bin" / "python"
    python.symlink_to(os.path.realpath("/bin/sh"))
    script = tmp_path / "tools" / "agent"
    script.parent.mkdir()
    script.write_text(f"#!{python}\nprint('hi')\n")

    found = interpreter_paths(script)

    assert venv / "bin" in found and venv in found
    assert venv in needed_paths(script, {"PATH": "/usr/bin"}, tmp_path)


def test_binaries_and_env_shebangs_add_nothing(tmp_path: Path) -> None:
    elf = Path("/bin/sh")
    env_script = tmp_path / "agent"
    env_script.write_text("#!/usr/bin/env python3\n")
    assert interpreter_paths(elf) == []
    assert interpreter_paths(env_script) == [Path("/usr/bin"), Path(os.path.realpath("/usr/bin/env")).parent]
    assert interpreter_paths(tmp_path / "missing") == []
