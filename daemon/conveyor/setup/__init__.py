"""Getting a repository ready and telling a person what works: `conveyor init` and `conveyor doctor`.

May import: anything but the CLI.
"""
