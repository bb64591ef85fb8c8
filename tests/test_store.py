"""The workspace database: WAL, busy timeout, named migrations, the transactional event log."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from comfyvn.hooks import emit
from comfyvn.store import Database, get_database, open_store
from comfyvn.store.db import BUSY_TIMEOUT_MS, _split_sql
from comfyvn.store.migrations import MIGRATIONS


@pytest.fixture
def db(ws) -> Database:
    return open_store(ws)


def test_one_database_per_workspace_in_wal_mode_with_a_busy_timeout(ws, db):
    assert db.path == ws.db_path
    assert get_database(ws.db_path) is db
    assert db.query_one("PRAGMA journal_mode")[0] == "wal"
    assert db.query_one("PRAGMA busy_timeout")[0] == BUSY_TIMEOUT_MS >= 5000
    other = db.new_connection()
    try:
        assert other.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_each_thread_gets_its_own_connection(db):
    seen = []
    t = threading.Thread(target=lambda: seen.append(db.conn))
    t.start()
    t.join()
    assert seen[0] is not db.conn


def test_migrations_are_named_ordered_and_idempotent(ws, db):
    names = [name for name, _ in MIGRATIONS]
    assert len(names) == len(set(names)), "migration names must be unique"
    assert db.applied_migrations() == names
    assert db.migrate() == []
    again = Database(ws.db_path)  # a second opener (another process would do the same)
    try:
        assert again.migrate() == []
        assert again.applied_migrations() == names
    finally:
        again.close()
    tables = {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"events", "assets", "asset_tags", "thumbnails", "file_intents", "schema_migrations"} <= tables


def test_concurrent_first_opens_migrate_once(tmp_path):
    path = tmp_path / "fresh.sqlite3"
    code = "import sys; from comfyvn.store import Database; Database(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, COUNT(*) FROM schema_migrations GROUP BY name").fetchall()
    finally:
        conn.close()
    assert sorted(r[0] for r in rows) == sorted(n for n, _ in MIGRATIONS)
    assert all(r[1] == 1 for r in rows)


def test_a_failing_migration_is_rolled_back_and_reported(tmp_path, monkeypatch):
    import comfyvn.store.base as basemod

    monkeypatch.setattr(basemod, "MIGRATIONS", [*MIGRATIONS, ("test.001_broken", "CREATE TABLE ok_a(x); INSERT INTO nope VALUES (1)")])
    with pytest.raises(sqlite3.OperationalError, match="no such table: nope"):
        Database(tmp_path / "db.sqlite3")
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'ok_a'").fetchone() is None
        assert conn.execute("SELECT 1 FROM schema_migrations WHERE name = 'test.001_broken'").fetchone() is None
    finally:
        conn.close()


def test_migration_scripts_keep_semicolons_inside_triggers_and_strings():
    script = """
    CREATE TABLE a(x TEXT);
    CREATE TRIGGER a_log AFTER INSERT ON a BEGIN INSERT INTO a(x) SELECT ';' WHERE 0; END;
    INSERT INTO a(x) VALUES ('semi;colon');
    """
    parts = _split_sql(script)
    assert len(parts) == 3
    assert parts[1].startswith("CREATE TRIGGER") and parts[1].endswith("END;")
    assert "'semi;colon'" in parts[2]


def test_an_event_commits_with_its_change(db):
    with db.transaction() as conn:
        conn.execute("INSERT INTO assets(project_id, uid, type, path, hash, bytes, created_at, updated_at)"
                     " VALUES ('p', 'u1', 't', 'x', 'h', 1, 0, 0)")
        env = emit(conn, "on_modder_test", {"message": "hello"}, project_id="p")
    row = db.query_one("SELECT topic, project_id FROM events WHERE id = ?", (env["id"],))
    assert tuple(row) == ("on_modder_test", "p")
    assert db.query_one("SELECT COUNT(*) FROM assets WHERE uid = 'u1'")[0] == 1


def test_a_rolled_back_change_leaves_no_event(db):
    before = db.query_one("SELECT COUNT(*) FROM events")[0]
    with pytest.raises(RuntimeError, match="boom"):
        with db.transaction() as conn:
            conn.execute("INSERT INTO assets(project_id, uid, type, path, hash, bytes, created_at, updated_at)"
                         " VALUES ('p', 'u2', 't', 'y', 'h', 1, 0, 0)")
            emit(conn, "on_modder_test", {"message": "never"})
            raise RuntimeError("boom")
    assert db.query_one("SELECT COUNT(*) FROM events")[0] == before
    assert db.query_one("SELECT COUNT(*) FROM assets WHERE uid = 'u2'")[0] == 0
    assert not db.conn.in_transaction


def test_emit_outside_a_transaction_is_refused(db):
    with pytest.raises(RuntimeError, match="inside Database.transaction"):
        emit(db.conn, "on_modder_test", {"message": "x"})


def test_nested_transactions_join_the_outer_one(db):
    with pytest.raises(ValueError):
        with db.transaction():
            with db.transaction() as inner:
                emit(inner, "on_modder_test", {"message": "inner"})
            raise ValueError("outer fails")
    assert db.query_one("SELECT COUNT(*) FROM events WHERE data LIKE '%inner%'")[0] == 0


def test_writers_from_two_processes_never_see_database_is_locked(ws, db):
    code = """
import sys
from comfyvn.hooks import emit
from comfyvn.store import database_at
db = database_at(sys.argv[1])
for i in range(150):
    with db.transaction() as conn:
        emit(conn, "on_modder_test", {"message": sys.argv[2] + str(i)})
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, db.url, tag], stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    for i in range(150):  # and this process writes at the same time
        with db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": f"c{i}"})
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    counts = {tag: db.query_one("SELECT COUNT(*) FROM events WHERE data LIKE ?", (f'%"message": "{tag}%',))[0]
              for tag in "abc"}
    assert counts == {"a": 150, "b": 150, "c": 150}


def test_close_leaves_the_connections_of_other_live_threads_alone(tmp_path):
    db = Database(tmp_path / "x.sqlite3")
    mine = db.conn
    started, stop, errors, reads = threading.Event(), threading.Event(), [], [0]

    def reader() -> None:  # a dispatcher or tailer thread in the middle of its work
        try:
            db.conn.execute("SELECT 1").fetchone()
            started.set()
            while not stop.is_set():
                db.conn.execute("SELECT COUNT(*) FROM events").fetchone()
                reads[0] += 1
        except Exception as exc:  # pragma: no cover - the failure this test guards against
            errors.append(exc)

    worker = threading.Thread(target=reader)
    worker.start()
    assert started.wait(10)
    db.close()  # used to close the reader's connection under a running statement (a segfault)
    before = reads[0]
    while reads[0] < before + 100 and worker.is_alive():
        pass
    stop.set()
    worker.join(10)
    assert errors == [] and reads[0] >= before + 100
    with pytest.raises(sqlite3.ProgrammingError):
        mine.execute("SELECT 1")  # this thread's own connection is closed
    assert db.conn.execute("SELECT 1").fetchone()[0] == 1  # and a new one opens on demand
    db.close()  # the reader has ended: its connection goes too
    assert db._all == []
