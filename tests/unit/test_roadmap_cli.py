"""`conveyor roadmap`: the items as the daemon reads them, what starts next, and why the rest waits; JSON in
the documented shape for both roadmap styles."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.conftest import FIXTURES, REPO_ROOT

from conveyor.cli.main import cli

# The plan as it stood on 2026-11-20, frozen: a realistic multi-priority roadmap with known contents.
OWN = REPO_ROOT / "tests" / "unit" / "data" / "roadmaps" / "conveyor-plan-2026-11-20.ROADMAP.md"
PHASES = FIXTURES / "roadmaps" / "initiatives-phases.ROADMAP.md"
ITEM_KEYS = {"number", "title", "status", "dependencies", "agent", "task_id"}
STATUSES = {"planned", "in_progress", "in_review", "completed", "blocked", "other"}
SMALL = """\
### 🔴 **PRIORITY 1: First thing**

**Status**: ✅ Completed

### 🟡 **PRIORITY 2.5: Second thing**

**Status**: 📝 Planned
**Dependency**: Requires PRIORITY 1 (First thing) completed
**Agent**: qa-quinn

### 🟡 **PRIORITY 3: Third thing**

**Status**: 📝 Planned
**Dependency**: Requires PRIORITY 2.5 completed
"""


def roadmap(*args: str, cwd: Path) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = CliRunner().invoke(cli, ["roadmap", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_json_for_the_priority_style(tmp_path: Path) -> None:
    code, out = roadmap("--file", str(OWN), "--format", "json", cwd=tmp_path)   # outside any repository
    assert code == 0
    document = json.loads(out)
    assert set(document) == {"items", "next"}
    assert all(set(item) == ITEM_KEYS and item["status"] in STATUSES for item in document["items"])
    by_number = {item["number"]: item for item in document["items"]}
    assert list(by_number) == ["1", "2", "3", "3.5", "4", "5", "6", "7"]
    assert by_number["1"]["status"] == "in_progress"
    assert by_number["1"]["task_id"] == "2026-11-20T0900-backend-dev-core-pipeline"
    assert by_number["3.5"] == {"number": "3.5", "title": "Board Hygiene", "status": "planned",
                                "dependencies": ["1", "3"], "agent": "python-pedro", "task_id": None}
    assert by_number["6"]["status"] == "other" and by_number["7"]["status"] == "blocked"
    assert document["next"] == []                     # everything waits for PRIORITY 1


def test_json_for_the_initiatives_and_phases_style(tmp_path: Path) -> None:
    code, out = roadmap("--file", str(PHASES), "--format", "json", cwd=tmp_path)
    assert code == 0
    by_number = {item["number"]: item for item in json.loads(out)["items"]}
    assert by_number["1.2"]["dependencies"] == ["1.1"]
    assert by_number["1.2"]["agent"] == "architect-alphonso"
    assert by_number["1.1"]["status"] == "in_progress"


def test_the_table_says_what_starts_and_why_the_rest_waits(tmp_path: Path) -> None:
    path = tmp_path / "ROADMAP.md"
    path.write_text(SMALL, encoding="utf-8")
    code, out = roadmap("--file", str(path), cwd=tmp_path)
    assert code == 0
    assert "Starts next:\n  PRIORITY 2.5 (Second thing) (agent qa-quinn)\n" in out
    assert "PRIORITY 3 (Third thing): waits for PRIORITY 2.5 (Second thing): planned" in out
    code, out = roadmap("--file", str(path), "--format", "json", cwd=tmp_path)
    assert json.loads(out)["next"] == ["2.5"]


def test_inside_a_repository_it_reads_the_configured_file_and_knows_the_board(git_repo: Path) -> None:
    (git_repo / "ROADMAP.md").write_text(SMALL, encoding="utf-8")
    code, out = roadmap(cwd=git_repo)
    assert code == 0 and "PRIORITY 2.5 (Second thing)" in out and "already ran" not in out
    ran = git_repo / "work" / "collaboration" / "done" / "qa-quinn" / "roadmap-2.5-second-thing.yaml"
    ran.parent.mkdir(parents=True)
    ran.write_text("id: roadmap-2.5-second-thing\nagent: qa-quinn\nstatus: error\n", encoding="utf-8")
    code, out = roadmap(cwd=git_repo)
    # issue 16: it waits (saying why and how to run it again) instead of also being listed to start next
    assert "PRIORITY 2.5 (Second thing): its task roadmap-2.5-second-thing already ran" in out
    assert "conveyor task retry roadmap-2.5-second-thing" in out
    assert "Starts next:\n  PRIORITY 2.5" not in out
    assert "roadmap-driven work is off" in out            # and the daemon would not start anything anyway


def conveyor(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command line in its own process (its logging set-up stays out of this one)."""
    return subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_missing_roadmap_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    done = conveyor("roadmap", "--file", str(tmp_path / "nope.md"), cwd=tmp_path)
    assert done.returncode == 1
    assert "nope.md does not exist" in done.stderr and "Traceback" not in done.stderr


def test_without_file_outside_a_repository_it_says_so(tmp_path: Path) -> None:
    done = conveyor("roadmap", cwd=tmp_path)
    assert done.returncode == 1
    assert "not inside a git repository" in done.stderr and "Traceback" not in done.stderr
