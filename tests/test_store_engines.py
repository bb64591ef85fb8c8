"""The same store behaviour on both engines: an SQLite workspace file and a real PostgreSQL database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pgserver import start_cluster

import comfyvn.store.base as basemod
from comfyvn.config import ConfigError, store_url
from comfyvn.errors import Conflict
from comfyvn.store import (
    Database,
    IntegrityError,
    LockTimeout,
    SqliteDatabase,
    StoreUnavailable,
    TransactionFailed,
    database_at,
    forget_database,
    get_database,
    open_store,
)
from comfyvn.store.migrations import MIGRATIONS
from comfyvn.store.sql import pg_ddl, pg_placeholders

REPO_ROOT = Path(__file__).resolve().parents[1]


def _tables(db: Database) -> set[str]:
    if db.engine == "sqlite":
        return {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {r[0] for r in db.query("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")}


def _target(db: Database) -> str:
    return str(db.path) if isinstance(db, SqliteDatabase) else db.url


def test_migrations_are_idempotent_and_recorded(store):
    names = [name for name, _ in MIGRATIONS]
    assert store.applied_migrations() == names
    assert store.migrate() == []
    again = Database(_target(store))  # a second opener (another process would do the same)
    try:
        assert again.engine == store.engine
        assert again.migrate() == []
        assert again.applied_migrations() == names
    finally:
        getattr(again, "close_all", again.close)()
    assert {"events", "assets", "asset_tags", "ingest_jobs", "webhook_outbox", "library_hash_cache",
            "licence_overrides", "schema_migrations"} <= _tables(store)


def test_a_migration_entry_per_engine_and_a_failing_one_rolled_back(ws, store, monkeypatch):
    other = "sqlite" if store.engine == "postgresql" else "postgresql"
    monkeypatch.setattr(basemod, "MIGRATIONS", [*MIGRATIONS, (
        "test.001_per_engine", {store.engine: "CREATE TABLE only_here (x INTEGER); INSERT INTO only_here VALUES (7);",
                                other: "CREATE TABLE only_there (x INTEGER);"}),
        ("test.002_elsewhere", {other: "CREATE TABLE nowhere_here (x INTEGER);"})])
    assert store.migrate() == ["test.001_per_engine", "test.002_elsewhere"]
    assert store.query_one("SELECT x FROM only_here")[0] == 7
    assert not {"only_there", "nowhere_here"} & _tables(store)
    assert store.applied_migrations()[-2:] == ["test.001_per_engine", "test.002_elsewhere"]
    monkeypatch.setattr(basemod, "MIGRATIONS", [*basemod.MIGRATIONS, (
        "test.003_broken", "CREATE TABLE ok_a (x INTEGER); INSERT INTO nope VALUES (1)")])
    with pytest.raises(Exception, match="nope"):
        store.migrate()
    assert "ok_a" not in _tables(store)
    assert "test.003_broken" not in store.applied_migrations()


def test_placeholders_are_translated_outside_quotes_only(store):
    row = store.query_one("SELECT '?' AS lit, ? AS p, 'it''s ?%' AS quoted, ? || '%' AS pct, 1 AS \"why?\"",
                          ("x", "y"))
    assert tuple(row) == ("?", "x", "it's ?%", "y%", 1)
    assert row["why?"] == 1
    sql = "SELECT '?', \"a?\", ? FROM t WHERE x LIKE '%?' AND y = ?"
    assert pg_placeholders(sql) == "SELECT '?', \"a?\", %s FROM t WHERE x LIKE '%%?' AND y = %s"
    assert pg_placeholders(sql) is pg_placeholders(sql)  # translated once per text


def test_rows_index_by_position_and_by_name(store):
    with store.transaction() as conn:
        conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, ?, ?)", ("c", 41, 1.5))
    row = store.query_one("SELECT name, last_event_id, updated_at FROM webhook_cursor WHERE name = ?", ("c",))
    assert (row[0], row[1], row[2]) == ("c", 41, 1.5)
    assert (row["name"], row["last_event_id"], row["updated_at"]) == ("c", 41, 1.5)
    assert dict(row) == {"name": "c", "last_event_id": 41, "updated_at": 1.5}
    assert list(row.keys()) == ["name", "last_event_id", "updated_at"]
    assert [tuple(r) for r in store.query("SELECT name FROM webhook_cursor")] == [("c",)]
    assert store.query_one("SELECT COALESCE(SUM(last_event_id), 0) FROM webhook_cursor")[0] == 41  # an int


def test_cursor_rowcount_executemany_and_returning(store):
    with store.transaction() as conn:
        conn.executemany("INSERT INTO hash_aliases(value, form, sha256) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                         [("a", "crc32", "s1"), ("b", "crc32", "s1"), ("a", "crc32", "s1")])
        assert conn.execute("UPDATE hash_aliases SET value = upper(value) WHERE sha256 = ?", ("s1",)).rowcount == 2
        ids = [conn.execute("INSERT INTO events(topic, ts, data) VALUES (?, ?, ?) RETURNING id",
                            ("t", 1.0, "{}")).fetchone()[0] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert sorted(r[0] for r in store.query("SELECT value FROM hash_aliases")) == ["A", "B"]


def test_integrity_errors_are_one_engine_neutral_class_and_roll_back(store):
    sql = "INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, 0, 0)"
    with pytest.raises(IntegrityError) as caught, store.transaction() as conn:
        conn.execute(sql, ("dup",))
        conn.execute(sql, ("dup",))
    assert isinstance(caught.value, Conflict)
    assert store.query_one("SELECT COUNT(*) FROM webhook_cursor")[0] == 0  # the first insert went too
    assert not store.conn.in_transaction
    with store.transaction() as conn:  # the connection is usable again
        conn.execute(sql, ("dup",))
    assert store.query_one("SELECT COUNT(*) FROM webhook_cursor")[0] == 1


def test_nested_transactions_join_and_an_error_rolls_back_everything(store):
    sql = "INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, 0, 0)"
    other = store.new_connection()
    try:
        with store.transaction() as outer:
            outer.execute(sql, ("outer",))
            with store.transaction() as inner:
                assert inner is outer
                inner.execute(sql, ("inner",))
            assert outer.in_transaction  # the inner block did not commit
            assert other.execute("SELECT COUNT(*) FROM webhook_cursor").fetchone()[0] == 0
        assert other.execute("SELECT COUNT(*) FROM webhook_cursor").fetchone()[0] == 2
        with pytest.raises(RuntimeError, match="boom"), store.transaction() as outer:
            outer.execute(sql, ("a",))
            with store.transaction() as inner:
                inner.execute(sql, ("b",))
            raise RuntimeError("boom")
        assert sorted(r[0] for r in other.execute("SELECT name FROM webhook_cursor").fetchall()) == ["inner", "outer"]
    finally:
        other.close()


def test_a_swallowed_statement_error_never_commits_silently(store):
    """PostgreSQL turns COMMIT of a failed transaction into a silent ROLLBACK: the store says so."""
    sql = "INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, 0, 0)"
    with store.transaction() as conn:
        conn.execute(sql, ("kept",))

    def write(swallow: bool) -> None:
        with store.transaction() as conn:
            conn.execute(sql, ("new",))
            conn.execute("SAVEPOINT s")
            try:
                conn.execute(sql, ("kept",))
            except IntegrityError:
                conn.execute("ROLLBACK TO s")  # the portable way: undo the failed statement only
            conn.execute("RELEASE s")
            if swallow:
                try:
                    conn.execute(sql, ("kept",))  # swallowed without a savepoint
                except IntegrityError:
                    pass

    if store.engine == "postgresql":
        with pytest.raises(TransactionFailed, match="nothing was committed"):
            write(swallow=True)
        assert sorted(r[0] for r in store.query("SELECT name FROM webhook_cursor")) == ["kept"]
    else:  # SQLite undoes the failed statement alone and goes on
        write(swallow=True)
        assert sorted(r[0] for r in store.query("SELECT name FROM webhook_cursor")) == ["kept", "new"]
        store.conn.execute("DELETE FROM webhook_cursor WHERE name = 'new'")
    write(swallow=False)  # with a savepoint, both engines commit the rest
    assert sorted(r[0] for r in store.query("SELECT name FROM webhook_cursor")) == ["kept", "new"]


@pytest.mark.parametrize("threads", [4])
def test_read_then_write_transactions_lose_no_update(store, threads):
    """Writers are serialised on both engines: a read-modify-write inside a transaction is safe."""
    with store.transaction() as conn:
        conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES ('n', 0, 0)")
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(25):
                with store.transaction() as conn:
                    n = conn.execute("SELECT last_event_id FROM webhook_cursor WHERE name = 'n'").fetchone()[0]
                    conn.execute("UPDATE webhook_cursor SET last_event_id = ? WHERE name = 'n'", (n + 1,))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=bump) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    assert store.query_one("SELECT last_event_id FROM webhook_cursor WHERE name = 'n'")[0] == threads * 25


_HOLD = """
import sys
from comfyvn.store import Database, LockTimeout
db = Database(sys.argv[1])
try:
    with db.advisory_lock("scan:default", timeout=float(sys.argv[2])):
        print("acquired", flush=True)
except LockTimeout as exc:
    print("refused", exc, flush=True)
"""


def _try_lock_in_child(db: Database, timeout: float) -> str:
    env = {"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _HOLD, _target(db), str(timeout)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_an_advisory_lock_excludes_a_second_process(store, tmp_path):
    with store.advisory_lock("scan:default"):
        assert _try_lock_in_child(store, 0.3).startswith("refused")
        with pytest.raises(LockTimeout), store.advisory_lock("scan:default", timeout=0.1):
            pass  # the lock is not re-entrant: a second holder in this process waits too
    assert _try_lock_in_child(store, 5) == "acquired"
    if store.engine == "postgresql":  # a database lock, never a lock file
        assert not list(tmp_path.rglob("*.lock"))
        assert store.query_one("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                               " (SELECT oid FROM pg_database WHERE datname = current_database())")[0] == 0


def test_store_unavailable_while_the_server_is_down_and_back_after(tmp_path):
    cluster = start_cluster()
    try:
        url = cluster.create_database()
        db = database_at(url)
        with db.transaction() as conn:
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES ('a', 1, 0)")
        cluster.stop()
        with pytest.raises(StoreUnavailable) as caught:
            db.query("SELECT name FROM webhook_cursor")
        assert caught.value.code == "store_unavailable"
        with pytest.raises(StoreUnavailable), db.transaction() as conn:
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES ('b', 1, 0)")
        failed_in_thread: list[BaseException] = []
        t = threading.Thread(target=lambda: failed_in_thread.extend(_capture(lambda: db.query("SELECT 1"))))
        t.start()
        t.join()
        assert len(failed_in_thread) == 1 and isinstance(failed_in_thread[0], StoreUnavailable)
        cluster.start()
        assert [r[0] for r in db.query("SELECT name FROM webhook_cursor")] == ["a"]  # the same Database reconnects
        with db.transaction() as conn:
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES ('b', 1, 0)")
        assert db.query_one("SELECT COUNT(*) FROM webhook_cursor")[0] == 2
        cluster.restart()  # a restart between two uses: the idle connection is replaced, no error at all
        assert db.query_one("SELECT COUNT(*) FROM webhook_cursor")[0] == 2
        forget_database(url)
    finally:
        cluster.destroy()


def _capture(call) -> list[BaseException]:
    try:
        call()
    except BaseException as exc:
        return [exc]
    return []


def test_store_unavailable_answers_503():
    from server_ext.handlers.base import error_row, map_exception

    exc = StoreUnavailable("PostgreSQL store unreachable")
    row = error_row(exc)
    assert row is not None and row.status == 503
    mapped = map_exception(exc)
    assert getattr(mapped, "status_code", None) == 503


# -- the setting ---------------------------------------------------------------------------------
def test_store_url_defaults_to_the_workspace_file_and_is_overridable(ws, monkeypatch):
    monkeypatch.delenv("COMFYVN_STORE_URL", raising=False)
    assert store_url(ws) == "sqlite://" + ws.db_path.as_posix()
    assert open_store(ws) is get_database(ws.db_path)
    config = json.loads(ws.config_file.read_text())
    config["store"] = {"url": "postgres://team@db.example:5433/comfyvn"}
    ws.config_file.write_text(json.dumps(config))
    assert store_url(ws) == "postgresql://team@db.example:5433/comfyvn"
    monkeypatch.setenv("COMFYVN_STORE_URL", "sqlite:///srv/shared.sqlite3")
    assert store_url(ws) == "sqlite:///srv/shared.sqlite3"  # the environment wins


@pytest.mark.parametrize("bad", ["mysql://x@y/z", "sqlite://relative/file.db", "postgresql://", "/just/a/path", 5])
def test_a_bad_store_url_is_a_config_error_naming_the_setting(ws, monkeypatch, bad):
    monkeypatch.delenv("COMFYVN_STORE_URL", raising=False)
    config = json.loads(ws.config_file.read_text())
    config["store"] = {"url": bad}
    ws.config_file.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="store.url"):
        store_url(ws)


def test_a_bad_environment_store_url_names_the_variable_and_hides_the_password(ws, monkeypatch):
    monkeypatch.setenv("COMFYVN_STORE_URL", "mysql://team:s3cret@db.example/comfyvn")
    with pytest.raises(ConfigError, match="COMFYVN_STORE_URL") as caught:
        store_url(ws)
    assert "s3cret" not in str(caught.value)


def test_the_ddl_translator():
    assert pg_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, r REAL, b BLOB,"
                  " note TEXT DEFAULT 'INTEGER REAL') WITHOUT ROWID;") == (
        "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n BIGINT NOT NULL,"
        " r DOUBLE PRECISION, b BYTEA, note TEXT DEFAULT 'INTEGER REAL');")


def test_job_claims_on_postgresql_skip_rows_another_claimer_holds(pg_url):
    from comfyvn.ingest.jobstore import JobStore

    db = database_at(pg_url)
    with db.transaction() as conn:
        for i in range(3):
            conn.execute("INSERT INTO ingest_jobs(job_id, project_id, provider, status, created_at, updated_at)"
                         " VALUES (?, 'default', 'local', 'queued', ?, ?)", (f"j{i}", i, i))
    other = db.new_connection()  # another machine's claim of j0, still in flight
    try:
        other.execute("BEGIN")
        other.execute("SELECT job_id FROM ingest_jobs WHERE job_id = 'j0' FOR UPDATE")
        with db.transaction() as conn:
            assert [job["job_id"] for job in JobStore(db).queued(conn)] == ["j1", "j2"]  # skipped, not waited for
        other.execute("ROLLBACK")
    finally:
        other.close()
    with db.transaction() as conn:
        assert [job["job_id"] for job in JobStore(db).queued(conn)] == ["j0", "j1", "j2"]
    forget_database(pg_url)


def test_a_sqlite_too_old_for_the_schema_is_named_with_both_versions():
    from comfyvn.store.db import MIN_SQLITE, check_sqlite_version
    from comfyvn.store.errors import EngineTooOld

    check_sqlite_version(MIN_SQLITE)  # the oldest that works
    with pytest.raises(EngineTooOld, match=r"SQLite is 3\.31\.1; the workspace store needs 3\.37\.0 or newer"):
        check_sqlite_version((3, 31, 1))  # Ubuntu 20.04's: no trigram tokenizer


def test_a_failing_migration_is_named_in_its_error_and_commits_nothing(tmp_path, monkeypatch):
    import sqlite3

    from comfyvn.store import migrations as migrationsmod
    from comfyvn.store.db import SqliteDatabase as SqliteStore

    broken = [*migrationsmod.MIGRATIONS, ("test.999_broken", "CREATE TABLE half(x); CREATE TABLE half(y);")]
    monkeypatch.setattr("comfyvn.store.base.MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError) as info:
        SqliteStore(tmp_path / "store.db")
    assert "while applying the schema migration test.999_broken (sqlite)" in "\n".join(info.value.__notes__)
    conn = sqlite3.connect(tmp_path / "store.db")
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").fetchone() == (0,)
