"""SQLite access shared by every process of a workspace.

* WAL journal, ``busy_timeout`` and ``BEGIN IMMEDIATE`` write transactions, so several
  processes (server, kernels, CLIs) can write one file without ``database is locked``.
* One connection per thread (``sqlite3`` connections are not shared across threads).
* :meth:`Database.transaction` is the only way to write; the event log row of a change is
  inserted in the same transaction (see :mod:`comfyvn.hooks.events`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from .migrations import MIGRATIONS

BUSY_TIMEOUT_MS = 30_000


class Database:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []  # (opened by, connection)
        self._all_lock = threading.Lock()
        self._pid = os.getpid()
        self.migrate()

    # -- connections -------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._all_lock:
            self._all.append((threading.current_thread(), conn))
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        if os.getpid() != self._pid:  # forked child: never reuse the parent's handles
            self._local = threading.local()
            self._all = []
            self._pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def new_connection(self) -> sqlite3.Connection:
        """A private connection (for long-lived tailers that poll ``data_version``)."""
        return self._open()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short ``BEGIN IMMEDIATE`` write transaction; commits on success, rolls back on error."""
        conn = self.conn
        if conn.in_transaction:  # nested use joins the outer transaction
            yield conn
            return
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:  # busy beyond busy_timeout: back off, retry
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        else:
            raise sqlite3.OperationalError(f"{self.path}: database stayed locked; another process holds it")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:  # a failed COMMIT leaves the transaction open: never reuse it half-done
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended.

        A connection another live thread opened is left to it: closing it under a running
        statement would crash the process (SQLite frees what the statement still uses)."""
        me = threading.current_thread()
        with self._all_lock:
            keep = []
            for thread, conn in self._all:
                if thread is me or not thread.is_alive():
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                else:
                    keep.append((thread, conn))
            self._all = keep
        self._local.conn = None

    # -- migrations ----------------------------------------------------------------------
    def migrate(self) -> list[str]:
        """Apply pending named migrations (serialised across processes by a file lock)."""
        applied_now: list[str] = []
        with FileLock(str(self.path) + ".migrate.lock", timeout=120):
            conn = self.conn
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)")
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)", (name, time.time()))
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                applied_now.append(name)
        return applied_now

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM schema_migrations ORDER BY rowid")]


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (``;`` inside triggers and strings is kept)."""
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()[:80]!r}")
    return statements


_databases: dict[Path, Database] = {}
_databases_lock = threading.Lock()


def get_database(path: Path) -> Database:
    """The process-wide :class:`Database` for one file (created and migrated on first use)."""
    key = Path(path).resolve()
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            db = _databases[key] = Database(key)
        return db
