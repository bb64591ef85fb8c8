"""The workspace database behind one interface, on two engines, and the process-wide openers.

* :class:`~comfyvn.store.base.Database` is the interface every caller uses: ``db.engine``
  ("sqlite" | "postgresql"), ``db.url``, ``db.conn`` (this thread's connection),
  :meth:`~Database.transaction` (the only way to write; nested use joins),
  :meth:`~Database.query` / :meth:`~Database.query_one`, :meth:`~Database.new_connection`,
  :meth:`~Database.migrate`, :meth:`~Database.advisory_lock`.  ``Database(path_or_url)`` opens
  the engine the target names; :func:`open_store` the workspace's configured store.
* :class:`SqliteDatabase` (the embedded default): WAL journal, ``busy_timeout`` and
  ``BEGIN IMMEDIATE`` write transactions, so several processes (server, kernels, CLIs) can write
  one file without ``database is locked``; one connection per thread.
* :class:`~comfyvn.store.pg.PgDatabase` (a team's shared store): psycopg 3 with a connection pool.
* The event log row of a change is inserted in the change's transaction (see
  :mod:`comfyvn.hooks.events`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..config import Workspace, store_url
from . import base
from .base import Connection, Cursor, Database, StoreLock
from .errors import EngineTooOld, IntegrityError, LockTimeout
from .sql import split_sql

BUSY_TIMEOUT_MS = 30_000
SQLITE_PREFIX = "sqlite://"
_split_sql = split_sql  # the name tests and older callers use
__all__ = ["BUSY_TIMEOUT_MS", "Connection", "Cursor", "Database", "SqliteDatabase", "database_at", "forget_database",
           "get_database", "open_store"]


def _load_engine(name: str) -> None:
    if name == "postgresql":
        from . import pg  # noqa: F401  (defining PgDatabase registers it)


base._load_engine = _load_engine



#: FTS5's trigram tokenizer (3.34; the free-text index, registry.006_fulltext) and
#: ``pragma_table_list`` (3.37; store transfers)
MIN_SQLITE = (3, 37, 0)


def check_sqlite_version(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """Raise :class:`EngineTooOld` naming both versions when Python's SQLite is too old for the schema."""
    if version < MIN_SQLITE:
        raise EngineTooOld(
            f"this Python's SQLite is {'.'.join(map(str, version))}; the workspace store needs "
            f"{'.'.join(map(str, MIN_SQLITE))} or newer (its full-text index): use a newer Python build, "
            "or point store.url at PostgreSQL")

class _SqliteConnection(sqlite3.Connection):
    """``sqlite3.Connection`` raising the store's :class:`IntegrityError` (a subclass of sqlite3's)."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc


class _FileStoreLock(StoreLock):
    def __init__(self, path: Path, name: str) -> None:
        self._lock = FileLock(str(path), thread_local=False)
        self._name = name

    def acquire(self, timeout: float | None = None) -> None:
        try:
            self._lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise LockTimeout(f"{self._lock.lock_file}: lock {self._name!r} is held by another process") from None

    def release(self) -> None:
        self._lock.release()


class SqliteDatabase(Database):
    """The embedded engine: one SQLite file (see the module docstring)."""

    engine = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = str(path)
        self.path = Path(text[len(SQLITE_PREFIX):] if text.startswith(SQLITE_PREFIX) else text)
        self.url = SQLITE_PREFIX + self.path.resolve().as_posix()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []  # (opened by, connection)
        self._all_lock = threading.Lock()
        self._pid = os.getpid()
        check_sqlite_version()
        self.migrate()

    # -- connections -------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False, factory=_SqliteConnection)
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

    def change_marker(self, conn: Connection) -> int:
        """``PRAGMA data_version``: changes when another connection (thread or process) commits."""
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def marker_without_waiting(self, conn: Connection) -> bool:
        """No busy wait on ``conn``: a locked database raises at once (WAL readers are rarely locked)."""
        conn.execute("PRAGMA busy_timeout=0")
        return True

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

    def lock(self, name: str) -> StoreLock:
        """A file lock beside the database file (``<file>.<name>.lock``)."""
        return _FileStoreLock(Path(f"{self.path}.{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock"), name)

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
    def _ddl(self, spec: str | Mapping[str, str]) -> list[str]:
        script = spec if isinstance(spec, str) else spec.get("sqlite", "")
        return split_sql(script)


_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def get_database(path: str | os.PathLike[str]) -> Database:
    """The process-wide :class:`SqliteDatabase` for one file (created and migrated on first use)."""
    text = str(path)
    file = Path(text[len(SQLITE_PREFIX):] if text.startswith(SQLITE_PREFIX) else text).resolve()
    return _cached(SQLITE_PREFIX + file.as_posix(), lambda: SqliteDatabase(file))


def database_at(url: str) -> Database:
    """The process-wide :class:`Database` of a store URL (``sqlite:///...`` or ``postgresql://...``)."""
    if url.startswith(SQLITE_PREFIX):
        return get_database(url)
    return _cached(url, lambda: Database(url))


def open_store(ws: Workspace | None = None) -> Database:
    """The workspace's configured store (``store.url``, see :func:`comfyvn.config.store_url`)."""
    return database_at(store_url(ws))


def _cached(key: str, make: Any) -> Database:
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            db = _databases[key] = make()
        return db


def forget_database(url: str) -> None:
    """Close a store's connections and drop it from the process cache (tests dropping a database)."""
    with _databases_lock:
        db = _databases.pop(url, None)
    if db is not None:
        getattr(db, "close_all", db.close)()
