"""One SQLite write transaction, taken the way every store of the daemon takes it.

`BEGIN IMMEDIATE` takes the write lock at the start, so two processes (the daemon and a `conveyor` command)
never both read and then fail to upgrade to writing; any exception rolls back. Connections are opened with
`isolation_level=None` (autocommit), so this is the only place a transaction begins.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`with immediate(conn): …` commits at the end of the block, or rolls back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
