"""Per-folder fingerprints: a rescan loads the last scan's file rows only for folders whose
entries changed, and still finds every change, move and vanished file."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from comfyvn.config import update_config
from comfyvn.library.scan import Scanner, scan_library
from comfyvn.studio.core.asset_registry import AssetRegistry

OLD_NS = 1_600_000_000 * 10**9  # outside the hash cache's racy window


def make(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def reg(ws) -> AssetRegistry:
    return AssetRegistry("default", ws=ws, make_thumbnails=False)


@pytest.fixture
def tree(ws, tmp_path) -> Path:
    """Three folders of three files and one file at the top (10 files, 4 folders)."""
    root = tmp_path / "art"
    make(root / "top.png", b"top file")
    for d in ("bg", "chars", "chars/side"):
        for i in range(3):
            make(root / d / f"{i}.png", f"{d} {i}".encode() * 40)
    update_config({"library": {"roots": [{"name": "art", "path": str(root), "layout": "plain",
                                          "sidecars": "mirror"}]}}, ws)
    return root


def rescan(ws) -> tuple[Scanner, object]:
    scanner = Scanner(ws, "default", registry=reg(ws))
    return scanner, scanner.run()


def test_an_unchanged_tree_loads_no_file_row(ws, tree):
    first = scan_library(ws=ws, registry=reg(ws))
    assert first.files == 10 and first.folders == {"unchanged": 0, "compared": 4, "gone": 0}
    statements: list[str] = []
    scanner = Scanner(ws, "default", registry=reg(ws))
    conn = scanner.db.conn
    if isinstance(conn, sqlite3.Connection):  # the SQL itself, where the engine can show it
        conn.set_trace_callback(statements.append)
    try:
        report = scanner.run()
    finally:
        if isinstance(conn, sqlite3.Connection):
            conn.set_trace_callback(None)
    assert scanner.rows_loaded == 0
    assert report.folders == {"unchanged": 4, "compared": 0, "gone": 0}
    assert report.files == 10 and report.unchanged == 10 and report.bytes == first.bytes
    assert report.changed == report.vanished == report.registered == [] and report.hashed_files == 0
    assert all("SELECT rel, dev, ino" not in s for s in statements)  # the per-file row load


def test_a_file_changed_in_an_unchanged_tree_is_found_loading_only_its_folder(ws, tree):
    scan_library(ws=ws, registry=reg(ws))
    make(tree / "chars" / "side" / "1.png", b"new bytes, same folder" * 9)
    scanner, report = rescan(ws)
    assert report.changed == ["art:chars/side/1.png"] and report.hashed_files == 1
    assert scanner.rows_loaded == 3  # the rows of that folder only
    assert report.folders == {"unchanged": 3, "compared": 1, "gone": 0}
    assert reg(ws).find_by_hash(__import__("hashlib").sha256(b"new bytes, same folder" * 9).hexdigest())
    scanner, report = rescan(ws)  # and its new fingerprint is trusted from then on
    assert scanner.rows_loaded == 0 and report.changed == [] and report.unchanged == 10


def test_a_removed_folder_makes_its_files_vanish(ws, tree):
    scan_library(ws=ws, registry=reg(ws))
    shutil.rmtree(tree / "chars" / "side")
    scanner, report = rescan(ws)
    assert sorted(report.vanished) == [f"art:chars/side/{i}.png" for i in range(3)]
    assert len(report.missing) == 3 and report.folders["gone"] == 1
    assert report.files == 7
    _, again = rescan(ws)  # reported once: the folder's fingerprint is gone with it
    assert again.vanished == [] and again.folders == {"unchanged": 3, "compared": 0, "gone": 0}


def test_a_folder_moved_elsewhere_is_recognised_as_moved(ws, tree):
    first = scan_library(ws=ws, registry=reg(ws))
    os.rename(tree / "chars" / "side", tree / "bg" / "profile")
    _, report = rescan(ws)
    assert sorted((m["from"], m["to"]) for m in report.moved) == [
        (f"art:chars/side/{i}.png", f"art:bg/profile/{i}.png") for i in range(3)]
    assert report.registered == [] and report.missing == [] and report.hashed_files == 0
    assert len(list(reg(ws).iter_assets())) == len(first.registered)


def test_fingerprints_survive_a_restart(ws, tree):
    scan_library(ws=ws, registry=reg(ws))
    rows = reg(ws).db.query("SELECT rel_dir, fingerprint, files FROM library_folders WHERE project_id = ?"
                            " ORDER BY rel_dir", ("default",))
    assert [(r["rel_dir"], r["files"]) for r in rows] == [("", 1), ("bg", 3), ("chars", 3), ("chars/side", 3)]
    assert all(len(r["fingerprint"]) == 32 for r in rows)
    scanner, report = rescan(ws)  # a new Scanner and registry: only the database carries over
    assert scanner.rows_loaded == 0 and report.unchanged == 10


def test_a_missing_or_odd_fingerprint_means_the_slow_path_never_a_missed_change(ws, tree):
    scan_library(ws=ws, registry=reg(ws))
    db = reg(ws).db
    with db.transaction() as conn:  # as if written by a scan that died half-way
        conn.execute("UPDATE library_folders SET fingerprint = 'odd' WHERE rel_dir = 'bg'")
        conn.execute("DELETE FROM library_folders WHERE rel_dir = 'chars'")
    make(tree / "bg" / "0.png", b"changed under an odd fingerprint")
    make(tree / "chars" / "2.png", b"changed under no fingerprint")
    scanner, report = rescan(ws)
    assert sorted(report.changed) == ["art:bg/0.png", "art:chars/2.png"]
    assert scanner.rows_loaded == 6 and report.folders["compared"] == 2


def test_rows_from_before_fingerprints_are_compared_and_a_gone_folder_still_found(ws, tree):
    scan_library(ws=ws, registry=reg(ws))
    with reg(ws).db.transaction() as conn:  # a library scanned before the migration
        conn.execute("UPDATE library_files SET dir = NULL")
        conn.execute("DELETE FROM library_folders")
    shutil.rmtree(tree / "bg")
    scanner, report = rescan(ws)
    assert sorted(report.vanished) == [f"art:bg/{i}.png" for i in range(3)]
    assert report.changed == [] and report.registered == [] and scanner.rows_loaded == 10
    scanner, report = rescan(ws)
    assert scanner.rows_loaded == 0 and report.unchanged == 7 and report.vanished == []


def test_a_file_that_could_not_be_read_keeps_its_folder_untrusted(ws, tree, monkeypatch):
    from comfyvn.library.hashcache import HashCache

    real = HashCache.hash_file

    def failing(self, path, *args, **kwargs):
        if str(path).endswith("chars/1.png"):
            raise PermissionError(13, "Permission denied")
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(HashCache, "hash_file", failing)
    first = scan_library(ws=ws, registry=reg(ws))
    assert [e["path"] for e in first.errors] == [str(tree / "chars" / "1.png")]
    monkeypatch.setattr(HashCache, "hash_file", real)
    _, report = rescan(ws)
    assert report.new_files == 1 and len(report.registered) == 1 and report.errors == []


def test_a_symlinked_file_whose_target_changed_is_found(ws, tree, tmp_path):
    outside = make(tmp_path / "elsewhere" / "shared.png", b"shared v1" * 30)
    (tree / "bg" / "shared.png").symlink_to(outside)
    scan_library(ws=ws, registry=reg(ws))
    make(outside, b"shared v2, longer" * 30)
    scanner, report = rescan(ws)
    assert report.changed == ["art:bg/shared.png"] and scanner.rows_loaded == 4


def test_a_folder_with_something_to_report_reports_it_on_every_rescan(ws, tree):
    make(tree / "bg" / "id_rsa", b"not a key, but named like one")
    (tree / "chars" / "db-link").symlink_to(ws.db_path)
    os.link(ws.config_file, tree / "chars" / "side" / "hardlinked.png")
    expected = sorted(str(p) for p in (tree / "bg" / "id_rsa", tree / "chars" / "db-link",
                                       tree / "chars" / "side" / "hardlinked.png"))
    first = scan_library(ws=ws, registry=reg(ws))
    assert sorted(e["path"] for e in first.errors) == expected and len(first.registered) == 10
    scanner, report = rescan(ws)
    assert sorted(e["path"] for e in report.errors) == expected
    assert report.folders == {"unchanged": 1, "compared": 3, "gone": 0} and report.unchanged == 10
    assert report.registered == [] and scanner.rows_loaded == 9


def test_a_file_dated_before_1970_is_fingerprinted_and_its_change_found(ws, tree):
    make(tree / "bg" / "old.png", b"from the sixties", mtime_ns=-10**18)
    assert scan_library(ws=ws, registry=reg(ws)).files == 11
    scanner, report = rescan(ws)
    assert scanner.rows_loaded == 0 and report.unchanged == 11
    make(tree / "bg" / "old.png", b"from the fifties", mtime_ns=-10**18 + 1)
    _, report = rescan(ws)
    assert report.folders["compared"] == 1 and report.changed == ["art:bg/old.png"]
