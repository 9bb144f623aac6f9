"""Notifications: task events (done with its pull request, failed, needs input) sent to the channels of
`notifications:` in daemon.yaml, on a thread of their own, batched in a flood, retried, never fatal.

May import `config` and `core` only; the daemon's upkeep feeds it.
"""
