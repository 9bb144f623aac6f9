"""Names of the files the daemon keeps in its state folder, shared with the commands that read them.

Kept apart so that reading a snapshot (`conveyor status`) never imports the daemon itself.
"""

STATUS_FILE = "status.json"     # the running daemon's snapshot: running, queued, waiting, paused
LOCK_FILE = "daemon.lock"       # flock held by the one daemon serving the repository (its pid inside)
HISTORY_FILE = "history.db"     # finished tasks (board.history): what status, intake and archival ask about
BRANCH_PREFIX = "conveyor/"     # every task's result branch is BRANCH_PREFIX + task id


def task_branch(task_id: str) -> str:
    """The branch a task's change lands on: one place, so recovery, upkeep and the pipeline agree."""
    return f"{BRANCH_PREFIX}{task_id}"
