"""The vocabulary every box shares: the task file model and its statuses, errors that name file, line,
field and fix, UTC time, durable YAML writes, state file names.

Owns: `task`, `errors`, `timeutil`, `yamlio`, `fsops`, `state_files`, `openfiles`, `disk_trouble`, `logs`,
`printable` (what an agent printed, without control characters), `private` (owner-only state).
May import: nothing else of conveyor.
"""
