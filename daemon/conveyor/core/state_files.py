"""Names of the files the daemon keeps in its state folder, shared with the commands that read them.

Kept apart so that reading a snapshot (`conveyor status`) never imports the daemon itself.
"""

STATUS_FILE = "status.json"     # the running daemon's snapshot: running, queued, waiting, paused
