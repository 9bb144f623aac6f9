"""Coffee Maker's real roadmap (an excerpt, tests/fixtures/roadmaps/coffee-maker/): `conveyor roadmap --format json`
agrees with Coffee Maker's own parser on every item both recognise, lists user stories and repeated numbers,
picks the next item although people marked others In Progress, and writes through a symlinked ROADMAP.md."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from conveyor.roadmap.edit import status_in_progress
from conveyor.roadmap.file import WriteOutcome, read_roadmap, update_status
from conveyor.roadmap.model import classify_status
from conveyor.roadmap.select import count_in_flight, next_runnable
from tests.conftest import FIXTURES
from tests.integration.conftest import ConveyorCli

COFFEE = FIXTURES / "roadmaps" / "coffee-maker"
DECORATION = re.compile(r"\s+🔴.*\Z")


def expected() -> list[dict[str, Any]]:
    """Coffee Maker's list, each item under the key Conveyor gives it (a repeated number's later items
    are `<number>_2`, `<number>_3`, ... in file order)."""
    items: list[dict[str, Any]] = json.loads((COFFEE / "expected.json").read_text(encoding="utf-8"))
    seen: Counter[str] = Counter()
    for item in items:
        seen[item["key"]] += 1
        if seen[item["key"]] > 1:
            item["key"] = f"{item['key']}_{seen[item['key']]}"
    return items


def plain_title(title: str) -> str:
    """Coffee Maker keeps a heading's trailing decoration ("... 🔴 P0 CRITICAL - DO THIS FIRST!") in its
    title; Conveyor's title ends before it (8 of the 35 items differ only by that)."""
    return DECORATION.sub("", title)


def test_conveyor_roadmap_json_agrees_with_coffee_makers_parser(tmp_path: Path, conveyor_cli: ConveyorCli) -> None:
    shutil.copyfile(COFFEE / "ROADMAP.excerpt.md", tmp_path / "ROADMAP.md")
    done = conveyor_cli("roadmap", "--file", str(tmp_path / "ROADMAP.md"), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = {item["number"]: item for item in json.loads(done.stdout)["items"]}
    theirs = expected()
    both = [item for item in theirs if item["key"] in ours]
    assert len(both) == len(theirs) == 35              # Conveyor recognises every item Coffee Maker lists
    for item in both:
        mine = ours[item["key"]]
        assert (mine["title"], mine["status"]) == (plain_title(item["title"]), classify_status(item["status"]).value)
    # user stories are items, and both items of a repeated number appear, the later under a stable key
    assert ours["US-056"]["title"].startswith("Claude Skills Integration - Phase 2")
    assert ours["US-056_2"]["title"].startswith("Enforce CFR-013")
    assert ours["US-057_2"]["title"].startswith("Transform Daemon into Multi-Agent Orchestrator")


def test_items_people_marked_in_progress_leave_conveyors_slot_free() -> None:
    """US-048 and US-055 are In Progress by hand; with the default max_in_flight 1 something still starts."""
    read = read_roadmap(COFFEE / "ROADMAP.excerpt.md")
    assert read is not None
    roadmap = read[1]
    assert {i.number for i in roadmap if i.status.value == "in_progress"} >= {"US-048", "US-055"}
    assert count_in_flight(roadmap) == 0
    selection = next_runnable(roadmap, in_flight_limit=1, in_flight=count_in_flight(roadmap))
    assert len(selection.start) == 1


def test_a_symlinked_roadmap_is_written_through_to_its_target(tmp_path: Path) -> None:
    """Coffee Maker keeps docs/ROADMAP.md → roadmap/ROADMAP.md and reads the target: the target gets the
    status, and the link stays a link."""
    target = tmp_path / "docs" / "roadmap" / "ROADMAP.md"
    target.parent.mkdir(parents=True)
    shutil.copyfile(COFFEE / "ROADMAP.excerpt.md", target)
    link = tmp_path / "docs" / "ROADMAP.md"
    link.symlink_to(os.path.join("roadmap", "ROADMAP.md"))
    written = update_status(link, lambda roadmap: roadmap.get("24"), status_in_progress("roadmap-24-x"))
    assert written.outcome is WriteOutcome.WRITTEN
    assert link.is_symlink() and os.readlink(link) == os.path.join("roadmap", "ROADMAP.md")
    assert "🔄 In Progress (task roadmap-24-x)" in target.read_text(encoding="utf-8")
    again = read_roadmap(link)
    assert again is not None and again[1].item("24").task_id == "roadmap-24-x"
