"""The dashboard: a local web page that shows the board, the daemon's state and the spend, live.

It only reads: the board folders, the state directory (`status.json`, pauses, agent logs) and the
telemetry database (opened read-only; in a fleet, the fleet's PostgreSQL through `coordination.shared`).
The two routes that change anything (answering a question, retrying a failed task) write a task file
exactly as a person with a shell would, behind the login cookie and a CSRF token. May import `daemon`,
`coordination`, `scheduling`, `telemetry`, `board`, `config` and `core`; nothing below imports it.
"""
