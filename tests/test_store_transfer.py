"""``comfyvn-store migrate``: a workspace's database copied between stores, idempotent and verified."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from comfyvn.hooks.events import emit
from comfyvn.hooks.webhooks import WebhookManager
from comfyvn.ingest import AssetIngestQueue
from comfyvn.store import database_at, forget_database, get_database
from comfyvn.store.cli import main
from comfyvn.store.transfer import TransferConflict, TransferError, transfer
from comfyvn.studio.core.asset_registry import AssetRegistry

SQLITE = "sqlite://"


@pytest.fixture(autouse=True)
def sqlite_workspace(ws, monkeypatch):
    """These tests move a workspace's own SQLite file, whichever engine the suite runs on."""
    monkeypatch.delenv("COMFYVN_STORE_URL", raising=False)


def populate(ws) -> dict:
    """A workspace with rows in most tables: assets with tags and thumbnails, jobs, a webhook, events."""
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    folder = ws.root / "incoming"
    folder.mkdir(exist_ok=True)
    uids = []
    for i in range(7):
        src = folder / f"line-{i}.txt"
        src.write_text(f"line {i} \u00e9\u00e8 {os.urandom(8).hex()}")
        rec = reg.register_file(src, "text", tags=["voice", f"scene-{i % 3}"], license_tag="cc-by-4.0")
        uids.append(rec["uid"])
    reg.update_asset_meta(uids[0], {"note": "the first, with a 'quote' and \"double\""})
    reg.remove_asset(uids[-1])
    queue = AssetIngestQueue(ws)
    try:
        staged = folder / "staged.txt"
        staged.write_text("staged bytes")
        job = queue.enqueue(source_path=staged)
    finally:
        queue.stop_worker()
    hook = WebhookManager(get_database(ws.db_path), ws).register("on_asset_registered", "https://example.org/hook",
                                                                 secret="s3cret")
    return {"uids": uids[:-1], "job": job["job_id"], "webhook": hook["id"]}


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def test_sqlite_to_sqlite_copies_every_table_and_a_rerun_copies_nothing(ws, tmp_path):
    made = populate(ws)
    target = tmp_path / "backup" / "copy.sqlite3"
    report = transfer(SQLITE + str(ws.db_path), SQLITE + str(target))
    by_table = {t.table: t for t in report.tables}
    assert report.identical
    assert by_table["assets"].source_rows == by_table["assets"].copied == 6
    assert by_table["asset_tags"].copied == 12 and by_table["events"].copied > 6
    assert by_table["ingest_jobs"].copied == 1 and by_table["webhooks"].copied == 1
    assert all(t.source_checksum == t.target_checksum for t in report.tables)
    for table in ("assets", "asset_tags", "events", "ingest_jobs", "webhooks", "thumbnails"):
        order = "1, 2" if table != "events" else "id"
        assert rows(target, f"SELECT * FROM {table} ORDER BY {order}") == \
            rows(ws.db_path, f"SELECT * FROM {table} ORDER BY {order}"), table
    again = transfer(SQLITE + str(ws.db_path), SQLITE + str(target))
    assert again.identical and sum(t.copied for t in again.tables) == 0
    # the copy is a working store: a registry on it lists the same assets from the same folder
    reg = AssetRegistry(ws=ws, db_path=target, make_thumbnails=False, recover=False)
    assert sorted(a["uid"] for a in reg.list_assets()) == sorted(made["uids"])


def test_an_interrupted_copy_resumes_with_the_missing_rows_only(ws, tmp_path):
    populate(ws)
    target = tmp_path / "copy.sqlite3"
    transfer(SQLITE + str(ws.db_path), SQLITE + str(target), batch=2)
    with sqlite3.connect(target) as conn:  # as if the run had stopped after a few batches
        conn.execute("DELETE FROM events WHERE id > 3")
        conn.execute("DELETE FROM asset_tags WHERE tag = 'voice'")
    report = transfer(SQLITE + str(ws.db_path), SQLITE + str(target), batch=2)
    copied = {t.table: t.copied for t in report.tables if t.copied}
    assert copied == {"events": report.tables[[t.table for t in report.tables].index("events")].source_rows - 3,
                      "asset_tags": 6}
    assert report.identical


def test_a_target_with_different_rows_is_refused_untouched_unless_replace(ws, tmp_path):
    populate(ws)
    target = tmp_path / "copy.sqlite3"
    transfer(SQLITE + str(ws.db_path), SQLITE + str(target))
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE assets SET tags = '[\"edited\"]' WHERE rowid = (SELECT MIN(rowid) FROM assets)")
        conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES ('only-here', 1, 0)")
        conn.execute("DELETE FROM events WHERE id = 1")  # and a missing row: still nothing is written
    before = {t: rows(target, f"SELECT * FROM {t}") for t in ("assets", "webhook_cursor", "events")}
    with pytest.raises(TransferConflict, match=r"assets: 1 rows differ.*webhook_cursor: 0 rows differ, 1 only"):
        transfer(SQLITE + str(ws.db_path), SQLITE + str(target))
    assert {t: rows(target, f"SELECT * FROM {t}") for t in before} == before
    report = transfer(SQLITE + str(ws.db_path), SQLITE + str(target), replace=True)
    assert report.identical and report.replaced
    assert rows(target, "SELECT * FROM webhook_cursor") == rows(ws.db_path, "SELECT * FROM webhook_cursor")
    assert "only-here" not in str(rows(target, "SELECT * FROM webhook_cursor"))


def test_verify_compares_and_writes_nothing(ws, tmp_path):
    populate(ws)
    target = tmp_path / "copy.sqlite3"
    transfer(SQLITE + str(ws.db_path), SQLITE + str(target))
    with sqlite3.connect(target) as conn:
        conn.execute("DELETE FROM asset_tags WHERE tag = 'voice'")
    out = io.StringIO()
    assert main(["migrate", "--from", SQLITE + str(ws.db_path), "--to", SQLITE + str(target), "--verify"], out) == 1
    text = out.getvalue()
    assert "DIFFERENT: asset_tags" in text
    line = next(x for x in text.splitlines() if x.startswith("asset_tags "))
    assert line.split()[1] == "12" and line.split()[3] == "6" and line.split()[-1] == "DIFFERENT"
    assert len(rows(target, "SELECT * FROM asset_tags")) == 6  # nothing written
    assert main(["migrate", "--from", SQLITE + str(ws.db_path), "--to", SQLITE + str(target)], out) == 0
    assert main(["migrate", "--from", SQLITE + str(ws.db_path), "--to", SQLITE + str(target), "--verify"],
                out := io.StringIO()) == 0
    assert "verified: both sides hold the same rows" in out.getvalue()


def test_cli_defaults_to_the_workspace_store_and_refuses_bad_input(ws, tmp_path, capsys):
    populate(ws)
    target = tmp_path / "copy.sqlite3"
    out = io.StringIO()
    assert main(["migrate", "--to", SQLITE + str(target)], out) == 0  # --from: the workspace's store
    assert f"source: sqlite://{ws.db_path}" in out.getvalue()
    assert main(["migrate", "--to", "mysql://x/y"], io.StringIO()) == 2
    assert "not a store URL" in capsys.readouterr().err
    assert main(["migrate", "--to", SQLITE + str(ws.db_path)], io.StringIO()) == 2
    assert "the same store" in capsys.readouterr().err
    assert main(["migrate", "--from", SQLITE + str(tmp_path / "nope.sqlite3"), "--to", SQLITE + str(target)],
                io.StringIO()) == 2
    assert "no such database file" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite3").exists()
    with pytest.raises(TransferError, match="no such database file"):
        transfer(SQLITE + str(tmp_path / "nope.sqlite3"), SQLITE + str(target))


# ---------------------------------------------------------------------------- on a real PostgreSQL
def test_sqlite_to_postgresql_and_back_keeps_every_row_and_ids_continue(ws, tmp_path, pg_url):
    made = populate(ws)
    sqlite_url = SQLITE + str(ws.db_path)
    first = transfer(sqlite_url, pg_url, batch=3)
    assert first.identical
    assert sum(t.copied for t in first.tables) == sum(t.source_rows for t in first.tables) > 40
    assert sum(t.copied for t in transfer(sqlite_url, pg_url).tables) == 0  # idempotent
    # the store on PostgreSQL: the same assets, and new rows take ids after the copied ones
    db = database_at(pg_url)
    try:
        assert sorted(r[0] for r in db.query("SELECT uid FROM assets")) == sorted(made["uids"])
        copied_max = max(r[0] for r in rows(ws.db_path, "SELECT id FROM events"))
        with db.transaction() as conn:
            new = emit(conn, "on_modder_test", {"message": "written on PostgreSQL after the move"})
        assert new["id"] == copied_max + 1
        with db.transaction() as conn:
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, ?, ?)",
                         ("after-move", new["id"], 0.0))
        # a portable backup of the PostgreSQL store, and its checksums match PostgreSQL's
        backup = tmp_path / "backup.sqlite3"
        back = transfer(pg_url, SQLITE + str(backup))
        assert back.identical
        assert {t.table: t.target_rows for t in back.tables}["events"] == copied_max + 1
        for there, here in zip(first.tables, back.tables, strict=True):
            if there.table not in ("events", "webhook_cursor"):  # untouched since: one checksum all round
                assert there.source_checksum == here.target_checksum, there.table
        assert rows(backup, "SELECT * FROM assets ORDER BY uid") == rows(ws.db_path, "SELECT * FROM assets ORDER BY uid")
    finally:
        forget_database(pg_url)


def test_a_postgresql_target_with_different_rows_is_refused_unless_replace(ws, pg_url):
    populate(ws)
    sqlite_url = SQLITE + str(ws.db_path)
    transfer(sqlite_url, pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE ingest_jobs SET notes = '[\"edited on the team store\"]'")
        conn.execute("INSERT INTO hash_aliases(value, form, sha256) SELECT 'abc', 'md5', hash FROM assets LIMIT 1")
        before = conn.execute("SELECT notes FROM ingest_jobs").fetchall()
    with pytest.raises(TransferConflict, match=r"ingest_jobs: 1 rows differ.*hash_aliases: 0 rows differ, 1 only"):
        transfer(sqlite_url, pg_url)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT notes FROM ingest_jobs").fetchall() == before
    out = io.StringIO()
    assert main(["migrate", "--to", pg_url, "--replace"], out) == 0  # --from: the workspace's store
    assert "verified: both sides hold the same rows" in out.getvalue()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM hash_aliases").fetchone()[0] == 0
    assert main(["migrate", "--to", pg_url, "--verify"], io.StringIO()) == 0


def test_a_password_in_a_url_is_never_printed(ws, pg_cluster, capsys):
    populate(ws)
    pg_cluster.psql("ALTER ROLE comfyvn PASSWORD 'hunter2-secret'")  # trust auth: the password is not checked
    url = pg_cluster.create_database().replace("comfyvn@", "comfyvn:hunter2-secret@")
    out = io.StringIO()
    assert main(["migrate", "--to", url, "--json"], out) == 0
    assert json.loads(out.getvalue())["target"].startswith("postgresql://comfyvn:***@")
    assert main(["migrate", "--to", url], out) == 0
    bad = url.rsplit("/", 1)[0] + "/no_such_db"
    assert main(["migrate", "--to", bad], out) == 2
    printed = out.getvalue() + capsys.readouterr().err
    assert "hunter2-secret" not in printed and "comfyvn:***@" in printed
