"""Git, as the daemon uses it: the task's workspace and branch, staging and committing, merges and
refs. Nothing here decides anything about tasks.

May import: core.
"""
