"""The PostgreSQL engine: psycopg 3 connections from a psycopg_pool ``ConnectionPool``.

Same interface and guarantees as the SQLite engine (:mod:`comfyvn.store.db`):

* one connection per thread, taken from the pool on first use and given back when the thread
  has ended (or by :meth:`PgDatabase.close`); autocommit outside :meth:`PgDatabase.transaction`;
* SQL is written once with ``?`` placeholders (translated once per text, outside quotes);
* write transactions are serialised per database by a transaction-level advisory lock taken at
  ``BEGIN``, as SQLite's ``BEGIN IMMEDIATE`` serialises them: the read-check-write sequences the
  callers do inside a transaction stay race-free across processes and machines, and event ids
  become visible in commit order;
* a lost server raises :class:`StoreUnavailable` (HTTP 503); the next use reconnects (a
  statement outside a transaction is retried once on a fresh connection);
* rows are indexable by position and by column name (as ``sqlite3.Row``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper, Loader
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import Database, StoreLock
from .errors import IntegrityError, LockTimeout, StoreUnavailable, TransactionFailed
from .sql import pg_ddl, pg_placeholders, split_sql

CONNECT_TIMEOUT_S = 5  # a request waits at most this long for an unreachable server, then gets a 503
POOL_WAIT_S = 2.0  # for a pooled connection, before connecting one of its own
POOL_MAX = 64  # connections held per process (one per thread using the store, plus tailers and locks)
LOCK_TIMEOUT = "120s"  # a write transaction waits this long for another process's, as SQLite's busy timeout
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def lock_key(name: str) -> int:
    """The signed 64-bit advisory-lock key of a lock name."""
    return int.from_bytes(hashlib.blake2b(f"comfyvn:{name}".encode(), digest_size=8).digest(), "big", signed=True)


WRITE_LOCK = lock_key("write")
_open: weakref.WeakSet[PgDatabase] = weakref.WeakSet()  # every PgDatabase of this process


def close_all_databases() -> None:
    """Close the pool of every PostgreSQL store of this process (tests ending their server)."""
    for db in list(_open):
        db.close_all()


class Row(tuple):
    """A result row: ``row[0]`` and ``row["column"]`` (as ``sqlite3.Row``); ``dict(row)`` works."""

    __slots__ = ()
    _index: dict[str, int] = {}
    _names: tuple[str, ...] = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._index[key])
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


_row_classes: dict[tuple[str, ...], type[Row]] = {}


def _row_factory(cursor: Any) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    names = tuple(col.name for col in desc)
    cls = _row_classes.get(names)
    if cls is None:
        index = {name.lower(): i for i, name in reversed(list(enumerate(names)))}
        index.update({name: i for i, name in reversed(list(enumerate(names)))})
        cls = _row_classes[names] = type("Row", (Row,), {"__slots__": (), "_index": index, "_names": names})
    return cls


class _NumericLoader(Loader):
    """``numeric`` (``sum()`` of integers, ``avg()``) as int when integral, else float (as SQLite answers)."""

    def load(self, data: Any) -> Any:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


class _BoolAsIntDumper(Dumper):
    """Python booleans as 1/0: the schema's flags are integer columns (as SQLite stores them)."""

    oid = postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure(raw: psycopg.Connection) -> None:
    raw.adapters.register_loader("numeric", _NumericLoader)
    raw.adapters.register_dumper(bool, _BoolAsIntDumper)
    raw.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    raw.execute("SET max_parallel_workers_per_gather = 0")  # short OLTP queries: workers' start-up outweighs them


class PgCursor:
    """``conn.cursor()``: a reusable cursor whose ``execute`` takes ``?`` placeholders."""

    row_factory: Any = None  # accepted and ignored: rows are tuples already

    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn
        self._cur: Any = None

    def execute(self, sql: str, parameters: Any = ()) -> PgCursor:
        self._cur = self._conn.execute(sql, parameters)
        return self

    def executemany(self, sql: str, parameters: Iterable[Any]) -> PgCursor:
        self._cur = self._conn.executemany(sql, parameters)
        return self

    @property
    def rowcount(self) -> int:
        return -1 if self._cur is None else self._cur.rowcount

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._cur)

    def close(self) -> None:
        self._cur = None


class PgConnection:
    """A psycopg connection behind the interface callers use with ``sqlite3`` (see :class:`Connection`)."""

    def __init__(self, db: PgDatabase, raw: psycopg.Connection | None, private: bool = False) -> None:
        self._db = db
        self.raw = raw
        self._private = private

    def _raw(self) -> psycopg.Connection:
        if self.raw is None or self.raw.closed:
            self.raw = self._db._checkout(self._private)
        return self.raw

    @property
    def in_transaction(self) -> bool:
        raw = self.raw
        return raw is not None and not raw.closed and raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def failed(self) -> bool:
        """A statement failed inside the open transaction (PostgreSQL refuses the rest of it)."""
        raw = self.raw
        return raw is not None and not raw.closed and raw.info.transaction_status == TransactionStatus.INERROR

    def _run(self, call: Any) -> Any:
        raw = self._raw()
        idle = raw.info.transaction_status == TransactionStatus.IDLE
        try:
            return call(raw)
        except psycopg.IntegrityError as exc:
            raise IntegrityError(str(exc).strip()) from exc
        except _CONNECTION_ERRORS as exc:
            if not (raw.closed or raw.broken):
                raise  # a statement error, the connection is fine
            self._db._discard(raw)
            self.raw = None
            if idle:  # nothing was in flight: one retry on a fresh connection (the server restarted)
                try:
                    return call(self._raw())
                except _CONNECTION_ERRORS as again:
                    if self.raw is not None and (self.raw.closed or self.raw.broken):
                        self._db._discard(self.raw)
                        self.raw = None
                    raise StoreUnavailable(f"PostgreSQL store unreachable: {again}".strip()) from again
            raise StoreUnavailable(f"PostgreSQL store connection lost: {exc}".strip()) from exc

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        query = pg_placeholders(sql)
        params = parameters if parameters is not None else ()
        return self._run(lambda raw: raw.execute(query, params))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        query = pg_placeholders(sql)
        rows = list(parameters)

        def run(raw: psycopg.Connection) -> Any:
            cur = raw.cursor()
            cur.executemany(query, rows)
            return cur

        return self._run(run)

    def execute_script(self, script: str) -> None:
        """Run DDL as written (no placeholders; several statements allowed)."""
        self._run(lambda raw: raw.execute(script))

    def cursor(self) -> PgCursor:
        return PgCursor(self)

    def close(self) -> None:
        """Give a private connection back to the pool (this thread's own: see :meth:`PgDatabase.close`)."""
        if self.raw is not None:
            self._db._discard(self.raw)
            self.raw = None


class _PgStoreLock(StoreLock):
    """A session-level advisory lock on a private connection of its own while held."""

    def __init__(self, db: PgDatabase, name: str) -> None:
        self._db, self._name, self._key = db, name, lock_key(name)
        self._conn: PgConnection | None = None
        self._count = 0
        self._mutex = threading.Lock()

    def acquire(self, timeout: float | None = None) -> None:
        with self._mutex:
            if self._count:
                self._count += 1
                return
            conn = self._db.new_connection()
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                delay = 0.02
                while not conn.execute("SELECT pg_try_advisory_lock(?)", (self._key,)).fetchone()[0]:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise LockTimeout(f"lock {self._name!r} is held by another process of this store")
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            except BaseException:
                conn.close()
                raise
            self._conn, self._count = conn, 1

    def release(self) -> None:
        with self._mutex:
            if not self._count:
                raise RuntimeError(f"lock {self._name!r} is not held")
            self._count -= 1
            if self._count or self._conn is None:
                return
            conn, self._conn = self._conn, None
            try:
                conn.execute("SELECT pg_advisory_unlock(?)", (self._key,))
            except StoreUnavailable:  # the session is gone, and its lock with it
                pass
            finally:
                conn.close()


class PgDatabase(Database):
    """The PostgreSQL engine (see the module docstring)."""

    engine = "postgresql"
    _SCHEMA_MIGRATIONS = ("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, "
                          "applied_at DOUBLE PRECISION, seq BIGINT GENERATED BY DEFAULT AS IDENTITY)")
    _MIGRATIONS_ORDER = "seq"

    def __init__(self, url: str) -> None:
        self.url = "postgresql://" + url.split("://", 1)[1] if url.startswith("postgres://") else url
        self._local = threading.local()
        # id(raw) -> (the thread it serves, or None for a private connection, raw)
        self._held: dict[int, tuple[threading.Thread | None, psycopg.Connection]] = {}
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self._closed = False
        self._pid = os.getpid()
        _open.add(self)
        self.migrate()

    # -- connections -------------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool:
        if self._closed:
            raise StoreUnavailable(f"{self._safe_url()}: this store was closed (close_all)")
        if os.getpid() != self._pid:  # forked child: the parent's sockets and pool threads are not ours
            self._pool, self._held, self._local = None, {}, threading.local()
            self._pid = os.getpid()
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ConnectionPool(
                        self.url, min_size=0, max_size=POOL_MAX, open=True, timeout=CONNECT_TIMEOUT_S,
                        kwargs={"autocommit": True, "row_factory": _row_factory,
                                "connect_timeout": CONNECT_TIMEOUT_S},
                        configure=_configure, check=ConnectionPool.check_connection,
                        name=f"comfyvn-store-{os.getpid()}")
        return self._pool

    def _checkout(self, private: bool = False) -> psycopg.Connection:
        """A connection from the pool, held for the calling thread (or for a private user)."""
        pool = self._get_pool()
        with self._lock:  # connections of threads that have ended go back first
            dead = [key for key, (thread, _) in self._held.items() if thread is not None and not thread.is_alive()]
            returned = [self._held.pop(key)[1] for key in dead]
        for raw in returned:
            self._put(raw)
        try:
            raw = pool.getconn(timeout=POOL_WAIT_S)
        except (PoolTimeout, *_CONNECTION_ERRORS) as exc:
            try:  # after an outage the pool may still be backing off: one connection of our own now
                raw = psycopg.connect(self.url, autocommit=True, row_factory=_row_factory,
                                      connect_timeout=CONNECT_TIMEOUT_S)
                _configure(raw)
            except _CONNECTION_ERRORS:
                raise StoreUnavailable(f"PostgreSQL store unreachable ({self._safe_url()}): {exc}") from exc
        with self._lock:
            self._held[id(raw)] = (None if private else threading.current_thread(), raw)
        return raw

    def _put(self, raw: psycopg.Connection) -> None:
        if raw.info.transaction_status != TransactionStatus.IDLE and not (raw.closed or raw.broken):
            try:
                raw.execute("ROLLBACK")
            except psycopg.Error:
                pass
        pool = self._pool
        if pool is not None:
            try:
                pool.putconn(raw)
                return
            except Exception:  # a connection of an older pool (after a fork), or a closed pool
                pass
        raw.close()

    def _discard(self, raw: psycopg.Connection) -> None:
        with self._lock:
            self._held.pop(id(raw), None)
        self._put(raw)

    def _safe_url(self) -> str:
        scheme, rest = self.url.split("://", 1)
        userinfo, at, host = rest.rpartition("@")
        return f"{scheme}://{userinfo.split(':', 1)[0]}{at}{host}" if at else self.url

    @property
    def conn(self) -> PgConnection:
        """This thread's connection (autocommit; use :meth:`transaction` to write)."""
        if os.getpid() != self._pid:
            self._get_pool()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = PgConnection(self, None)
        return conn

    def new_connection(self) -> PgConnection:
        """A private connection (tailers, advisory locks); ``close()`` gives it back to the pool."""
        return PgConnection(self, self._checkout(private=True), private=True)

    def change_marker(self, conn: Any) -> str:
        """``pg_current_snapshot()`` (xmin:xmax:running): any commit changes it."""
        return str(conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """A write transaction, serialised with every other writer of the database (see the module
        docstring); commits on success, rolls back on error; nested use joins."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))
            yield conn
            if conn.failed:  # COMMIT would silently roll back: say so instead
                raise TransactionFailed("a statement failed inside the transaction and its error was swallowed; "
                                        "nothing was committed")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except StoreUnavailable:
                    pass
            raise

    def lock(self, name: str) -> StoreLock:
        """``pg_advisory_lock`` on a private session held while the lock is (never a file)."""
        return _PgStoreLock(self, name)

    def close(self) -> None:
        """Give back this thread's connection and those of threads that have ended."""
        me = threading.current_thread()
        with self._lock:
            mine = [key for key, (thread, _) in self._held.items()
                    if thread is not None and (thread is me or not thread.is_alive())]
            returned = [self._held.pop(key)[1] for key in mine]
        for raw in returned:
            self._put(raw)
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.raw = None

    def close_all(self) -> None:
        """Close the pool and every connection (the store is not used again)."""
        self._closed = True
        with self._lock:
            held = [raw for _, raw in self._held.values()]
            self._held = {}
        for raw in held:
            raw.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    # -- migrations ----------------------------------------------------------------------
    def _ddl(self, spec: str | Mapping[str, str]) -> list[str]:
        if isinstance(spec, str):
            return [pg_ddl(statement) for statement in split_sql(spec)]
        script = spec.get("postgresql", "")
        return [script] if script.strip() else []

    def _run_ddl(self, conn: Any, statement: str) -> None:
        conn.execute_script(statement)


__all__: Sequence[str] = ["PgConnection", "PgDatabase", "Row", "lock_key"]
