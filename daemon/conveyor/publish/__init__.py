"""Publishing a task's branch for review: push, pull requests through the GitHub REST API, the commit
message, and what became of each change (merged or closed, `outcomes`).

May import: core, config, runner (token types), telemetry, workspace.
"""
