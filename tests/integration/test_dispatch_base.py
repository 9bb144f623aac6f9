"""A task that did not come through intake (left in assigned/ by a previous run) still waits for its base."""

from __future__ import annotations

import yaml

from tests.integration.conftest import Repo


def test_a_recovered_task_whose_context_branch_is_missing_starts_from_the_base(repo: Repo) -> None:
    """Issue 15: it used to wait in assigned/ until the branch existed (for ever, for a branch of another
    repository); it starts from base_branch and says so, and a branch that exists is used."""
    assigned = repo.board / "assigned" / "backend-dev"
    assigned.mkdir(parents=True, exist_ok=True)
    document = {"id": "t-release", "agent": "backend-dev", "status": "assigned", "title": "Fix on release",
                "description": "FAKE write fix.txt fixed", "artefacts": ["fix.txt"],
                "context": {"branch": "release-2"}}
    (assigned / "t-release.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    repo.run_once()
    result = repo.done_doc("t-release")["result"]
    assert "release-2" in result["base_branch_note"]
    assert repo.git("rev-parse", "conveyor/t-release~1") == repo.git("rev-parse", "main")
    repo.git("branch", "release-3", "main")
    repo.git("commit", "-q", "--allow-empty", "-m", "main moves on")
    (assigned / "t-later.yaml").write_text(yaml.safe_dump({**document, "id": "t-later",
                                                           "context": {"branch": "release-3"}}, sort_keys=False))
    repo.run_once()
    later = repo.done_doc("t-later")["result"]
    assert "base_branch_note" not in later
    assert repo.git("rev-parse", "conveyor/t-later~1") == repo.git("rev-parse", "release-3")
