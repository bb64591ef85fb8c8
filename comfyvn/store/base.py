"""The store interface both engines implement (:class:`Database`, :class:`Connection`).

``Database(path_or_url)`` opens the engine the target names: a path or ``sqlite:///...`` is the
embedded SQLite engine (:mod:`.db`), ``postgresql://...`` the shared PostgreSQL one (:mod:`.pg`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Protocol

from .migrations import MIGRATIONS

#: engine name -> its Database class (each engine module registers its class by defining it)
ENGINES: dict[str, type[Database]] = {}
#: imports the module of an engine not loaded yet (set by :mod:`.db`, which knows the modules)
_load_engine: Callable[[str], None] | None = None


class Cursor(Protocol):
    """What ``conn.execute`` returns on both engines (rows index by position and by column name)."""

    row_factory: Any

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """A connection of either engine (``sqlite3.Connection`` is one); SQL uses ``?`` placeholders."""

    @property
    def in_transaction(self) -> bool: ...
    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any: ...
    def cursor(self) -> Any: ...
    def close(self) -> None: ...


class StoreLock:
    """A named lock of the store that every process honours (on PostgreSQL, on every machine).

    Re-entrant for its holder object and releasable by another thread than the one that took it
    (a request thread starts a scan, its worker thread ends it), as ``FileLock(thread_local=False)``."""

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock (:class:`~comfyvn.store.errors.LockTimeout` after ``timeout`` seconds; None waits)."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ChangeWatcher:
    """"Did anyone commit since?" for one database, cheaply: :meth:`marker` changes whenever any
    connection (another thread's, another process's) commits; while it is unchanged, what was read
    before is still what the database holds.  SQLite: ``PRAGMA data_version``; PostgreSQL:
    ``pg_current_snapshot()`` (it may also change without a commit: a needless re-read, never a
    stale one).  Read on a private connection of its own that never writes (its own commits would
    not count); :attr:`conn` may be used for reading.  A failed read closes the connection (the
    next call opens another) and raises.  Thread-safe.

    ``wait=False``: reads never wait for the database's locks (SQLite: a locked database raises at
    once), and :meth:`marker_now` answers without waiting for anything where the engine allows it."""

    def __init__(self, db: Database, *, wait: bool = True) -> None:
        self.db = db
        self._wait = wait
        self._instant = False  # the open connection reads the marker without waiting (see marker_now)
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> Connection:
        """The watcher's private connection (opened on first use): for reads only."""
        with self._lock:
            if self._conn is None:
                conn = self.db.new_connection()
                self._instant = not self._wait and self.db.marker_without_waiting(conn)
                self._conn = conn
            return self._conn

    def marker(self) -> int | str:
        """The marker now (opens the connection on first use); raises when it cannot be read."""
        conn = self.conn
        with self._lock:
            try:
                return self.db.change_marker(conn)
            except Exception:
                self._drop(conn)
                raise

    def marker_now(self) -> int | str | None:
        """:meth:`marker` read without waiting for anything, for an event loop (``wait=False`` only):
        None when the connection is not open yet (:meth:`marker` opens it, off the loop), another
        thread is reading it, the engine reads it over the network, or the database is locked."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._conn
            if conn is None or not self._instant:
                return None
            try:
                return self.db.change_marker(conn)
            except Exception:  # locked, or a broken connection (the next marker() replaces it)
                return None
        finally:
            self._lock.release()

    def _drop(self, conn: Connection) -> None:
        if self._conn is conn:
            self._conn = None
        try:
            conn.close()
        except Exception:  # noqa: S110 - a broken connection may fail to close; it is dropped either way
            pass

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop(self._conn)


class Database:
    """One workspace store; ``Database(path_or_url)`` picks the engine (see the module docstring)."""

    engine: ClassVar[str] = ""
    url: str

    def __new__(cls, target: str | os.PathLike[str]) -> Database:
        if cls is Database:  # pick the engine the target names
            scheme = str(target).partition("://")[0] if "://" in str(target) else "sqlite"
            scheme = "postgresql" if scheme == "postgres" else scheme
            if scheme not in ENGINES and _load_engine is not None:
                _load_engine(scheme)
            if scheme not in ENGINES:
                raise ValueError(f"no store engine for {scheme}:// (sqlite or postgresql)")
            cls = ENGINES[scheme]
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.engine:
            ENGINES[cls.engine] = cls

    # -- the interface (each engine implements these) -----------------------------------
    @property
    def conn(self) -> Connection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        raise NotImplementedError

    def new_connection(self) -> Connection:
        """A private connection (for long-lived tailers); the caller closes it."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Any]:
        """A short write transaction; commits on success, rolls back on error; nested use joins."""
        raise NotImplementedError

    def lock(self, name: str) -> StoreLock:
        """A :class:`StoreLock` named ``name`` (a file lock beside SQLite's file; ``pg_advisory_lock``
        on PostgreSQL, never a file there)."""
        raise NotImplementedError

    @contextmanager
    def advisory_lock(self, name: str, timeout: float | None = None) -> Iterator[None]:
        """Hold :meth:`lock` ``name`` for a block (:class:`LockTimeout` when ``timeout`` seconds pass
        without it)."""
        lock = self.lock(name)
        lock.acquire(timeout)
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        raise NotImplementedError

    def change_marker(self, conn: Connection) -> int | str:
        """A value read on ``conn`` (a private connection that never writes) that changes whenever
        any other connection commits; see :class:`ChangeWatcher`."""
        raise NotImplementedError

    def marker_without_waiting(self, conn: Connection) -> bool:
        """Make :meth:`change_marker` on ``conn`` never wait (for an event loop); False where the
        engine cannot promise it (a read over the network)."""
        return False

    def _ddl(self, spec: str | Mapping[str, str]) -> list[str]:
        """The statements of one migration entry on this engine."""
        raise NotImplementedError

    def _run_ddl(self, conn: Connection, statement: str) -> None:
        conn.execute(statement)

    _SCHEMA_MIGRATIONS = "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)"
    _MIGRATIONS_ORDER = "rowid"

    # -- shared ------------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple | dict = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def migrate(self) -> list[str]:
        """Apply pending named migrations (serialised across processes by :meth:`advisory_lock`)."""
        applied_now: list[str] = []
        with self.advisory_lock("migrate", timeout=120):
            conn = self.conn
            self._run_ddl(conn, self._SCHEMA_MIGRATIONS)
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, spec in MIGRATIONS:
                if name in done:
                    continue
                try:
                    with self.transaction() as tx:
                        for statement in self._ddl(spec):
                            self._run_ddl(tx, statement)
                        tx.execute("INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)",
                                   (name, time.time()))
                except Exception as exc:  # the error keeps its type; its message names the step
                    exc.add_note(f"while applying the schema migration {name} ({self.engine}); nothing of it "
                                 "was committed")
                    raise
                applied_now.append(name)
        return applied_now

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.query(f"SELECT name FROM schema_migrations ORDER BY {self._MIGRATIONS_ORDER}")]
