"""The long-running process: its loop and lifecycle (`loop`), intake from the inbox (`intake`), the
clock-driven ready queue (`ready_queue`), the status snapshot (`snapshot`, read back by `status`),
upkeep around tasks, the file watcher and the single-instance lock.

May import: everything below it; only the CLI and setup import the daemon.
"""
