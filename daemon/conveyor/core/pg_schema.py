"""Apply a piece of the fleet's PostgreSQL schema once per version, not at every start.

`CREATE INDEX IF NOT EXISTS` and `ALTER TABLE … ADD COLUMN IF NOT EXISTS` lock their table even when there
is nothing to do, and the lock they take first is weaker than the one they take next: a node starting while
others claim and heartbeat deadlocked with them (measured: three nodes starting together, "deadlock
detected", one node refused to start). So each piece's text is fingerprinted into `conveyor_schema`, and the
DDL runs only when that fingerprint is absent or different: after the first node, a start (and `conveyor
status`) reads one row and locks no fleet table. Builds SQL text only (no driver here); the caller runs it as
one transaction.
"""

from __future__ import annotations

import hashlib
import re

VERSIONS = "conveyor_schema"
LOCK = 0x636F6E76_0001   # one advisory lock for every piece: the first start of a fleet creates them in turn
_TAG = "$conveyor_ddl$"
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS ([a-z_][a-z0-9_]*)")


def versioned(part: str, ddl: str) -> str:
    """One multi-statement transaction: take the schema lock, then run `ddl` unless `part` is at its text."""
    if _TAG in ddl or not part.isidentifier():
        raise ValueError(f"schema piece {part!r} cannot be quoted")
    digest = hashlib.sha256(ddl.encode()).hexdigest()[:16]
    # a table dropped (or a database restored) by hand since: the piece is applied again, not trusted
    present = "".join(f" AND to_regclass('{table}') IS NOT NULL" for table in _TABLE.findall(ddl))
    return f"""
SELECT pg_advisory_xact_lock({LOCK});
CREATE TABLE IF NOT EXISTS {VERSIONS} (part text PRIMARY KEY, digest text NOT NULL,
                                       applied_at timestamptz NOT NULL DEFAULT now());
DO $conveyor_do$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM {VERSIONS} WHERE part = '{part}' AND digest = '{digest}'{present}) THEN
        EXECUTE {_TAG}{ddl}{_TAG};
        INSERT INTO {VERSIONS} (part, digest) VALUES ('{part}', '{digest}')
            ON CONFLICT (part) DO UPDATE SET digest = EXCLUDED.digest, applied_at = now();
    END IF;
END $conveyor_do$;
"""
