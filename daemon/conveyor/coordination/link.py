"""One PostgreSQL connection shared by the daemon's threads one statement at a time, opened again after the
server went away (a restart, a failover): the caller sees `Unreachable` once and the next call reconnects."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from conveyor.coordination.base import Unreachable as Unreachable  # its home is base (no psycopg there)

T = TypeVar("T")
Row = tuple[Any, ...]


class Link:
    def __init__(self, url: str, name: str, *, session_timeout_s: float | None = None) -> None:
        self._url = url
        self._name = name
        self._session_timeout_s = session_timeout_s
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Row] | None = None
        self.generation = 0          # grows with each new session (a lost session loses its advisory locks)

    def _connect(self) -> psycopg.Connection[Row]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        options = "-c statement_timeout=15000"
        if self._session_timeout_s is not None:   # a frozen node's session ends, and its advisory lock with it
            options += f" -c idle_session_timeout={int(self._session_timeout_s * 1000)}"
        self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5,
                                     application_name=self._name[:63], options=options)
        self.generation += 1
        return self._conn

    def run(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        """One statement in its own transaction; its rows (none for a statement that returns none)."""
        return self.transaction(lambda conn: _rows(conn.execute(sql, params)))

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        def insert(conn: psycopg.Connection[Row]) -> None:
            with conn.cursor() as cursor:
                cursor.executemany(sql, rows)
        self.transaction(insert)

    def transaction(self, work: Callable[[psycopg.Connection[Row]], T]) -> T:
        with self._lock:
            try:
                conn = self._connect()
                with conn.transaction():
                    return work(conn)
            except psycopg.OperationalError as exc:
                self._drop()
                raise Unreachable(f"the coordination database did not answer: {exc}".strip()) from exc

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _rows(cursor: psycopg.Cursor[Row]) -> list[Row]:
    return cursor.fetchall() if cursor.description is not None else []


def retrying(action: Callable[[], T], patience_s: float, pause_s: float = 0.5) -> T:
    """`action` again while the database is unreachable, for up to `patience_s` (a restart takes seconds)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return action()
        except Unreachable:
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause_s)
