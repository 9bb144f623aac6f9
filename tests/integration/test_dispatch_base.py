"""A task that did not come through intake (left in assigned/ by a previous run) still waits for its base."""

from __future__ import annotations

import yaml

from tests.integration.conftest import Repo


def test_a_recovered_task_waits_for_a_missing_base_branch_then_runs(repo: Repo) -> None:
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True, exist_ok=True)
    document = {"id": "t-release", "agent": "backend-dev", "status": "assigned", "title": "Fix on release",
                "description": "FAKE write fix.txt fixed", "artefacts": ["fix.txt"],
                "context": {"branch": "release-2"}}
    (assigned / "t-release.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

    first = repo.run_once()

    assert (assigned / "t-release.yaml").exists(), "the task must wait in assigned/, not fail"
    assert not repo.done_path("t-release").exists()
    held = [e for e in first.events("task.held") if e.get("task_id") == "t-release"]
    assert held and "release-2" in held[0]["reason"] and "does not exist" in held[0]["reason"]

    repo.git("branch", "release-2", "main")
    repo.run_once()

    result = repo.done_doc("t-release")["result"]
    assert result["branch"] == "conveyor/t-release"
    assert repo.git("rev-parse", "conveyor/t-release~1") == repo.git("rev-parse", "release-2")
