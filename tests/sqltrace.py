"""``traced(db)``: the SQL statements a block runs through the store, on either engine (SQLite's
trace callback shows them with their values; on PostgreSQL the text is recorded as callers wrote it,
with ``?`` placeholders)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def traced(db) -> Iterator[list[str]]:
    statements: list[str] = []
    if db.engine == "sqlite":
        db.conn.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            db.conn.set_trace_callback(None)
        return
    conn_type = type(db.conn)
    real = conn_type.execute

    def recording(self, sql, parameters=(), /):
        statements.append(" ".join(sql.split()))
        return real(self, sql, parameters)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conn_type, "execute", recording)
        yield statements
