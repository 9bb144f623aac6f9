"""The completion gate: a change is non-empty, touches only allowed paths, holds no secret, and its
verify commands pass, before anything is committed.

May import: core, runner (to run verify commands), workspace.
"""
