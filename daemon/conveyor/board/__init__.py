"""The task board on disk: folder layout, the exactly-once claim, finishing and rejecting, the index of
known ids, inbox reading, archival, AGENT_STATUS.md / WORKFLOW_LOG.md, board commits and hand-offs.

May import: core, config, workspace (board commits use git).
"""
