"""Which branch a task starts from: its `context.branch` when this repository has that branch, else the
configured base branch.

The workflow's task template (`context: {repo, branch}`) names the repository and branch the work concerns,
which may be another repository's. A branch this repository lacks is therefore not a reason to hold the
task: it starts from `base_branch`, and the task's log and result say so (never a silent hold).
"""

from __future__ import annotations

from pathlib import Path

from conveyor.workspace import git


def task_base(repo: Path, wanted: str | None, default: str) -> tuple[str, str | None]:
    """(branch to start from, a note when `wanted` was not used)."""
    if not wanted or wanted == default:
        return default, None
    if git.rev_parse(repo, f"refs/heads/{wanted}") is not None:
        return wanted, None
    return default, (f"context.branch '{wanted}' is not a branch of this repository; started from '{default}' "
                     f"instead (create the branch to start from it, or remove context.branch)")
