"""Copy a workspace's database from one store to another (``comfyvn-store migrate``).

SQLite -> PostgreSQL moves a workspace onto a team's shared store; PostgreSQL -> SQLite makes a
portable backup.  Both sides are first brought to the same schema (the project's migrations),
then every table is copied in schema order (the order the migrations create them), in batches:

* **one snapshot**: the source is read in one read-only transaction, so a live store gives a
  consistent copy;
* **idempotent**: each table of the source and the target is read in primary-key order and the
  two streams are merged: rows the target already holds identically are skipped, missing rows
  are copied (each batch commits, so an interrupted run resumes where it stopped), and a row
  that differs or exists only in the target is a conflict.  Conflicts refuse the whole run before
  anything is written, unless ``replace`` empties the target's tables first;
* **identity**: PostgreSQL's identity sequences are moved past the copied ids;
* **indexes are the target's**: SQLite's search index (FTS5 virtual and shadow tables) is never
  copied: the target's triggers index each copied row (PostgreSQL's GIN index likewise);
* **verifiable**: each table's row count and a checksum of its rows (SHA-256 over an
  engine-neutral encoding of every value, in key order) are reported for both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Conflict, InvalidInput
from .migrations import MIGRATIONS

SQLITE_PREFIX = "sqlite://"
PG_PREFIXES = ("postgresql://", "postgres://")
DEFAULT_BATCH = 5000
SKIPPED_TABLES = frozenset({"schema_migrations"})  # each side's own migration record


class TransferError(InvalidInput):
    """The two stores cannot be copied between (bad URL, no such file, schemas that differ)."""


class TransferConflict(Conflict):
    """The target holds different data; nothing was written (``replace`` empties it first)."""


# ---------------------------------------------------------------------------- endpoints
def engine_of(url: str) -> str:
    if url.startswith(SQLITE_PREFIX):
        return "sqlite"
    if url.startswith(PG_PREFIXES):
        return "postgresql"
    raise InvalidInput(f"{url!r} is not a store URL: use sqlite:///path/to/file.sqlite3 or "
                       "postgresql://user@host/database")


def sqlite_file(url: str) -> Path:
    return Path(url[len(SQLITE_PREFIX):]).expanduser()


def display_url(url: str) -> str:
    """The URL without its password (for printing)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def prepare_schema(url: str) -> list[str]:
    """Open the store at ``url`` through the project's store layer, which creates or migrates its
    schema; returns its applied migration names."""
    from .db import Database

    db = Database(sqlite_file(url)) if engine_of(url) == "sqlite" else Database(url)
    try:
        db.migrate()
        return list(db.applied_migrations())
    finally:
        getattr(db, "close_all", db.close)()


@dataclass
class Table:
    name: str
    columns: list[str]
    key: list[str]  # primary key columns (all columns when the table has none)
    text_key: list[bool] = field(default_factory=list)  # which key columns hold text (ordered bytewise)


class Side:
    """One store: a reader in one snapshot, and a writer (the target's)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_of(url)
        self._read: Any = None
        self._write: Any = None

    # -- connections
    def _connect(self, *, snapshot: bool = False) -> Any:
        if self.engine == "sqlite":
            path = sqlite_file(self.url)
            if not path.is_file():
                raise TransferError(f"{path}: no such database file")
            lite = sqlite3.connect(path, isolation_level=None, timeout=30)
            lite.execute("PRAGMA busy_timeout=30000")
            return lite
        import psycopg

        try:
            conn = psycopg.connect(self.url, connect_timeout=10, autocommit=not snapshot)
        except psycopg.OperationalError as exc:
            raise TransferError(f"cannot connect to {display_url(self.url)}: {str(exc).strip()}") from None
        if snapshot:  # the first statement opens the snapshot transaction
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
        return conn

    def reader(self) -> Any:
        """A connection inside one read-only snapshot, kept for the whole run."""
        if self._read is None:
            self._read = self._connect(snapshot=True)
            if self.engine == "sqlite":
                self._read.execute("BEGIN")
                self._read.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # takes the snapshot now
            else:
                self._read.execute("SELECT 1").fetchall()
        return self._read

    def writer(self) -> Any:
        if self._write is None:
            self._write = self._connect()
            if self.engine == "sqlite":
                self._write.execute("PRAGMA journal_mode=WAL")  # the reader's snapshot never blocks a commit
        return self._write

    def renew_snapshot(self) -> None:
        """End the read snapshot (the next :meth:`reader` sees everything committed since)."""
        if self._read is not None:
            self._read.rollback() if self.engine == "postgresql" else self._read.execute("ROLLBACK")
            self._read.close()
            self._read = None

    def close(self) -> None:
        self.renew_snapshot()
        if self._write is not None:
            self._write.close()
            self._write = None

    # -- schema
    def migrations(self) -> set[str]:
        return {r[0] for r in self.reader().execute("SELECT name FROM schema_migrations").fetchall()}

    def tables(self) -> dict[str, Table]:
        conn = self.reader()
        out: dict[str, Table] = {}
        if self.engine == "sqlite":
            # plain tables only: a virtual table (the FTS5 search index) and its shadow tables are no
            # data of the workspace's; the target's triggers index the rows as they arrive
            names = [r[0] for r in conn.execute(
                "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table'"
                " AND name NOT LIKE 'sqlite_%'")]
            for name in names:
                info = conn.execute(f"PRAGMA table_info({quote(name)})").fetchall()  # cid, name, type, notnull, dflt, pk
                columns = [r[1] for r in info]
                keyed = sorted((r[5], r[1], r[2]) for r in info if r[5])
                key = [k[1] for k in keyed] or columns
                types = {r[1]: (r[2] or "").upper() for r in info}
                out[name] = Table(name, columns, key, ["INT" not in types[k] and "REAL" not in types[k] for k in key])
            return out
        rows = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
            " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
            " ORDER BY c.table_name, c.ordinal_position").fetchall()
        col_types: dict[str, dict[str, str]] = {}
        for table, column, data_type in rows:
            col_types.setdefault(table, {})[column] = data_type
        keys: dict[str, list[str]] = {}
        for table, column in conn.execute(
                "SELECT c.relname, a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, pos) ON true"
                " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
                " WHERE i.indisprimary AND n.nspname = current_schema() ORDER BY c.relname, k.pos").fetchall():
            keys.setdefault(table, []).append(column)
        for table, cols in col_types.items():
            key = keys.get(table) or list(cols)
            out[table] = Table(table, list(cols), key,
                               [cols[k] in ("text", "character varying", "character") for k in key])
        return out

    # -- rows
    def rows(self, table: Table, columns: list[str], batch: int) -> Iterator[tuple]:
        """Every row of ``table`` (``columns``) in key order, streamed."""
        order = ", ".join(quote(k) + (' COLLATE "C"' if self.engine == "postgresql" and text else "")
                          for k, text in zip(table.key, table.text_key, strict=True))
        sql = f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table.name)} ORDER BY {order}"
        conn = self.reader()
        if self.engine == "sqlite":
            cursor = conn.execute(sql)
            while chunk := cursor.fetchmany(batch):
                yield from chunk
            return
        with conn.cursor(name=f"comfyvn_transfer_{table.name}") as cursor:
            cursor.itersize = batch
            cursor.execute(sql)
            yield from cursor

    def insert(self, table: Table, columns: list[str], rows: list[tuple]) -> None:
        """Insert one batch in its own transaction."""
        names = ", ".join(quote(c) for c in columns)
        conn = self.writer()
        if self.engine == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT INTO {quote(table.name)} ({names}) VALUES "
                                 f"({', '.join('?' * len(columns))})", [sqlite_values(r) for r in rows])
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {quote(table.name)} ({names}) OVERRIDING SYSTEM VALUE VALUES "
                               f"({', '.join(['%s'] * len(columns))})", rows)

    def empty(self, tables: list[Table]) -> None:
        """Delete every row of ``tables`` (in the reverse of schema order) in one transaction."""
        conn = self.writer()
        if self.engine == "sqlite":
            conn.execute("BEGIN IMMEDIATE")
            try:
                for table in reversed(tables):
                    conn.execute(f"DELETE FROM {quote(table.name)}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        with conn.transaction():
            for table in reversed(tables):
                conn.execute(f"DELETE FROM {quote(table.name)}")

    def reset_identities(self, tables: list[Table]) -> None:
        """PostgreSQL: move each identity/serial sequence past the largest id now in its table."""
        if self.engine != "postgresql":
            return  # SQLite's AUTOINCREMENT follows explicit ids by itself
        conn = self.writer()
        with conn.transaction():
            for table in tables:
                for column in table.columns:
                    seq = conn.execute("SELECT pg_get_serial_sequence(%s, %s)",
                                       (quote(table.name), column)).fetchone()[0]
                    if seq:
                        conn.execute(f"SELECT setval(%s, COALESCE((SELECT MAX({quote(column)}) FROM "
                                     f"{quote(table.name)}), 0) + 1, false)", (seq,))


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sqlite_values(row: tuple) -> tuple:
    """A PostgreSQL row in SQLite's types (booleans as 0/1, JSON documents as text)."""
    return tuple(int(v) if isinstance(v, bool) else json.dumps(v) if isinstance(v, dict | list) else v for v in row)


# ---------------------------------------------------------------------------- comparing
def encode_value(value: Any) -> str:
    """One value in an engine-neutral text: equal data encodes equally on SQLite and PostgreSQL."""
    if value is None:
        return "N"
    if isinstance(value, bool):
        return f"I{int(value)}"
    if isinstance(value, int):
        return f"I{value}"
    if isinstance(value, float):
        return f"I{int(value)}" if value.is_integer() and abs(value) < 2**53 else f"F{value!r}"
    if isinstance(value, str):
        return "S" + value
    if isinstance(value, bytes | bytearray | memoryview):
        return "B" + bytes(value).hex()
    if isinstance(value, dict | list):
        return "S" + json.dumps(value)
    return "S" + str(value)


def encode_row(row: tuple) -> bytes:
    return ("\x1f".join(encode_value(v) for v in row) + "\x1e").encode("utf-8", "surrogatepass")


@dataclass
class TableReport:
    table: str
    source_rows: int = 0
    source_checksum: str = ""
    target_rows: int = 0
    target_checksum: str = ""
    copied: int = 0
    differing: int = 0  # rows in both with different values
    target_only: int = 0  # rows only the target holds

    @property
    def identical(self) -> bool:
        return self.source_rows == self.target_rows and self.source_checksum == self.target_checksum

    @property
    def conflicts(self) -> int:
        return self.differing + self.target_only


class _Digest:
    def __init__(self) -> None:
        self.rows = 0
        self.sha = hashlib.sha256()

    def add(self, encoded: bytes) -> None:
        self.rows += 1
        self.sha.update(encoded)

    @property
    def hex(self) -> str:
        return self.sha.hexdigest()[:16]


def _merge(table: Table, columns: list[str], source: Side, target: Side, batch: int, report: TableReport,
           on_missing: Callable[[tuple], None] | None) -> None:
    """Walk both sides in key order: count and checksum each, classify rows, hand missing ones on."""
    key_at = [columns.index(k) for k in table.key]

    def keyed(rows: Iterator[tuple]) -> Iterator[tuple[tuple, bytes, tuple]]:
        for row in rows:
            yield tuple(row[i] for i in key_at), encode_row(row), tuple(row)

    src, tgt = keyed(source.rows(table, columns, batch)), keyed(target.rows(table, columns, batch))
    s_digest, t_digest = _Digest(), _Digest()
    s, t = next(src, None), next(tgt, None)
    while s is not None or t is not None:
        if t is None or (s is not None and _key(s[0]) < _key(t[0])):
            assert s is not None  # the loop runs while either side has a row
            s_digest.add(s[1])
            if on_missing is not None:
                on_missing(s[2])
            s = next(src, None)
        elif s is None or _key(t[0]) < _key(s[0]):
            t_digest.add(t[1])
            report.target_only += 1
            t = next(tgt, None)
        else:
            s_digest.add(s[1])
            t_digest.add(t[1])
            if s[1] != t[1]:
                report.differing += 1
            s, t = next(src, None), next(tgt, None)
    report.source_rows, report.source_checksum = s_digest.rows, s_digest.hex
    report.target_rows, report.target_checksum = t_digest.rows, t_digest.hex


def _key(values: tuple) -> tuple:
    """A key comparable the way both engines order it (NULLs first, numbers, then text by code point)."""
    return tuple((0, 0) if v is None else (1, v) if isinstance(v, int | float) else (2, encode_value(v))
                 for v in values)


# ---------------------------------------------------------------------------- the run
@dataclass
class TransferReport:
    source: str
    target: str
    copy: bool
    replaced: bool
    tables: list[TableReport]
    skipped_tables: list[str]

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    def to_dict(self) -> dict:
        return {"source": display_url(self.source), "target": display_url(self.target), "copy": self.copy, "replaced": self.replaced,
                "identical": self.identical, "skipped_tables": self.skipped_tables,
                "tables": [{**t.__dict__, "identical": t.identical} for t in self.tables]}


def schema_order() -> list[str]:
    """Tables in the order the migrations create them."""
    order: list[str] = []
    for _name, spec in MIGRATIONS:
        texts = [spec] if isinstance(spec, str) else list(spec.values())
        for text in texts:
            for table in re.findall(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", text, re.I):
                if table not in order:
                    order.append(table)
    return order


def _plan(source: Side, target: Side) -> tuple[list[tuple[Table, Table, list[str]]], list[str]]:
    """The tables to copy (source table, target table, common columns) in schema order."""
    missing = sorted(source.migrations() ^ target.migrations())
    if missing:
        raise TransferError("the two stores are at different schema versions (migrations only one side has: "
                            f"{', '.join(missing)}); upgrade comfyvn where the store was last written")
    s_tables, t_tables = source.tables(), target.tables()
    rank = {name: i for i, name in enumerate(schema_order())}
    names = sorted(set(s_tables) | set(t_tables), key=lambda n: (rank.get(n, len(rank)), n))
    plan, skipped = [], []
    for name in names:
        if name in SKIPPED_TABLES:
            continue
        if name not in s_tables or name not in t_tables:
            skipped.append(name)  # an engine's own table (nothing of the workspace's)
            continue
        s_table, t_table = s_tables[name], t_tables[name]
        lost = [c for c in s_table.columns if c not in t_table.columns]
        if lost:
            raise TransferError(f"table {name}: the target has no column {', '.join(lost)}")
        if s_table.key != t_table.key:
            raise TransferError(f"table {name}: keyed by {s_table.key} in the source, {t_table.key} in the target")
        columns = [c for c in s_table.columns if c in t_table.columns]
        plan.append((s_table, t_table, columns))
    return plan, skipped


def transfer(source_url: str, target_url: str, *, copy: bool = True, replace: bool = False,
             batch: int = DEFAULT_BATCH, progress: Callable[[str], None] | None = None) -> TransferReport:
    """Copy the store at ``source_url`` into ``target_url`` (see the module docstring).

    ``copy=False`` only compares (counts and checksums of both sides; nothing is written, the
    target's schema is not created).  :class:`TransferConflict` when the target holds different
    rows and ``replace`` is false (nothing written).  Returns the report of the final state."""
    if batch < 1:
        raise InvalidInput("batch must be at least 1")
    if engine_of(source_url) == engine_of(target_url) and _same_store(source_url, target_url):
        raise InvalidInput("the source and the target are the same store")
    say = progress or (lambda _msg: None)
    if engine_of(source_url) == "sqlite" and not sqlite_file(source_url).is_file():
        raise TransferError(f"{sqlite_file(source_url)}: no such database file")
    prepare_schema(source_url)
    if copy:
        prepare_schema(target_url)
    source, target = Side(source_url), Side(target_url)
    try:
        plan, skipped = _plan(source, target)
        reports = {s.name: TableReport(s.name) for s, _t, _c in plan}
        for s_table, _t, columns in plan:  # 1. compare: a conflict stops the run before any write
            _merge(s_table, columns, source, target, batch, reports[s_table.name], None)
        if not copy:
            return TransferReport(source_url, target_url, False, False, list(reports.values()), skipped)
        conflicts = [r for r in reports.values() if r.conflicts]
        if conflicts and not replace:
            detail = "; ".join(f"{r.table}: {r.differing} rows differ, {r.target_only} only in the target"
                               for r in conflicts)
            raise TransferConflict(f"{display_url(target_url)} already holds different data ({detail}); nothing was "
                                   "written. Pass --replace to empty the target's tables and copy again")
        if conflicts:
            say("emptying the target's tables")
            target.empty([t for _s, t, _c in plan])
        target.renew_snapshot()
        for s_table, _t, columns in plan:  # 2. copy what the target lacks, batch by batch
            report = TableReport(s_table.name)
            pending: list[tuple] = []

            def missing(row: tuple, table: Table = s_table, cols: list[str] = columns,
                        pending: list[tuple] = pending, report: TableReport = report) -> None:
                pending.append(row)
                if len(pending) >= batch:
                    target.insert(table, cols, pending)
                    report.copied += len(pending)
                    pending.clear()

            _merge(s_table, columns, source, target, batch, report, missing)
            if pending:
                target.insert(s_table, columns, pending)
                report.copied += len(pending)
            reports[s_table.name].copied = report.copied
            if report.copied:
                say(f"{s_table.name}: copied {report.copied} rows")
        target.reset_identities([t for _s, t, _c in plan])
        target.renew_snapshot()
        final = []
        for s_table, _t, columns in plan:  # 3. both sides again, as they are now
            report = TableReport(s_table.name, copied=reports[s_table.name].copied)
            _merge(s_table, columns, source, target, batch, report, None)
            final.append(report)
        return TransferReport(source_url, target_url, True, bool(conflicts), final, skipped)
    finally:
        source.close()
        target.close()


def _same_store(a: str, b: str) -> bool:
    if engine_of(a) == "sqlite":
        return sqlite_file(a).resolve() == sqlite_file(b).resolve()
    return a.rstrip("/") == b.rstrip("/")


def format_report(report: TransferReport) -> str:
    width = max([len("table"), *(len(t.table) for t in report.tables)])
    lines = [f"source: {display_url(report.source)}", f"target: {display_url(report.target)}", "",
             f"{'table':<{width}}  {'source rows':>11}  {'source checksum':<16}  {'target rows':>11}  "
             f"{'target checksum':<16}  {'copied':>8}  state"]
    for t in report.tables:
        lines.append(f"{t.table:<{width}}  {t.source_rows:>11}  {t.source_checksum:<16}  {t.target_rows:>11}  "
                     f"{t.target_checksum:<16}  {t.copied:>8}  {'same' if t.identical else 'DIFFERENT'}")
    if report.skipped_tables:
        lines.append(f"(tables only one side has, not copied: {', '.join(report.skipped_tables)})")
    different = [t.table for t in report.tables if not t.identical]
    lines.append("")
    lines.append("verified: both sides hold the same rows" if not different
                 else f"DIFFERENT: {', '.join(different)}")
    return "\n".join(lines)
