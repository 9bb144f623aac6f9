"""Every example in README.md is valid as written: each YAML block goes through `conveyor task validate` or
`conveyor config validate` in a scratch repository and draws no error and no warning (issue 16: the
README's own example task drew a warning), and the `conveyor submit` example is accepted."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.conftest import REPO_ROOT, git
from tests.integration.test_cli import Cli, cli  # noqa: F401  (the in-process `conveyor` fixture)

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(kind: str) -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    return [body for lang, body in BLOCK.findall(text) if lang == kind]


def _scratch(tmp_path: Path, cli: Cli) -> Path:  # noqa: F811
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    assert cli("init", cwd=project).code == 0
    venv_bin = project / ".venv" / "bin"        # the project's own virtualenv, where verify finds pytest
    venv_bin.mkdir(parents=True)
    (venv_bin / "pytest").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    (venv_bin / "pytest").chmod(0o755)
    return project


def test_every_yaml_example_validates_without_warnings(tmp_path: Path, cli: Cli) -> None:  # noqa: F811
    project = _scratch(tmp_path, cli)
    blocks = _blocks("yaml")
    assert len(blocks) >= 2
    checked = 0
    for body in blocks:
        target = body.splitlines()[0].removeprefix("#").strip()
        path = project / target
        path.parent.mkdir(parents=True, exist_ok=True)
        if target.startswith("work/collaboration/inbox/"):
            staged = project / f"{path.stem}.yaml"      # validated beside the board: nothing runs it
            staged.write_text(body, encoding="utf-8")
            result = cli("task", "validate", str(staged), cwd=project)
            assert result.code == 0, result.out
            assert f"ok    {staged}" in result.out and "0 with warnings" in result.out, result.out
        else:
            assert target.startswith("config/"), f"a README YAML example names no file: {body[:80]!r}"
            if path.name == "tools.yaml":   # the README adds an entry to the file init wrote
                path.write_text(body, encoding="utf-8")
            result = cli("config", "validate", cwd=project)
            assert result.code == 0, result.err
            unexpected = [line for line in result.out.splitlines()
                          if line.startswith("warning:") and "is not on PATH" not in line]
            assert unexpected == [], unexpected
        checked += 1
    assert checked == len(blocks)


def test_the_submit_example_is_accepted(tmp_path: Path, cli: Cli) -> None:  # noqa: F811
    project = _scratch(tmp_path, cli)
    (project / "README.md").write_text("# project\n", encoding="utf-8")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "init")
    (usage,) = [body for body in _blocks("sh") if "conveyor submit" in body]
    command = usage[usage.index("conveyor submit"):]
    command = command[: command.index("\nconveyor status")].replace("\\\n", " ")
    argv = shlex.split(command)[1:]
    result = cli(*argv, cwd=project)
    assert result.code == 0, result.err
    path = Path(result.out.strip())
    checked = cli("task", "validate", str(path), cwd=project)
    assert checked.code == 0 and "0 with warnings" in checked.out, checked.out
