"""comfyvn-library: scan / duplicates / status as JSON, refusal of a folder that is no workspace,
duplicates across roots and the registry (nothing deleted), scan hook events."""

from __future__ import annotations

import json
import os
from pathlib import Path

from comfyvn.config import update_config
from comfyvn.hooks.events import read_events
from comfyvn.library.cli import main
from comfyvn.library.duplicates import duplicate_report
from comfyvn.library.scan import ScanBusyError, Scanner, scan_library
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry

OLD_NS = 1_600_000_000 * 10**9


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    return path


def two_roots(ws, tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "loras" / "style.safetensors", b"S" * 40_000)
    write(b / "backup" / "style-copy.safetensors", b"S" * 40_000)
    write(b / "backup" / "style-copy2.safetensors", b"S" * 40_000)
    write(a / "images" / "hero.png", b"H" * 3_000)
    write(a / "loras" / "unique.safetensors", b"U" * 500)
    update_config({"library": {"roots": [{"name": "a", "path": str(a), "layout": "comfyui"},
                                         {"name": "b", "path": str(b), "layout": "plain", "sidecars": "beside"}]}},
                  ws)
    return a, b


def test_cli_refuses_a_folder_that_is_not_a_workspace(tmp_path, capsys):
    empty = tmp_path / "not-a-workspace"
    empty.mkdir()
    assert main(["status", "--workspace", str(empty)]) == 2
    assert "is not a comfyvn workspace" in capsys.readouterr().err
    assert list(empty.iterdir()) == []  # nothing created there


def test_cli_scan_json_then_duplicates_json(ws, tmp_path, capsys):
    a, b = two_roots(ws, tmp_path)
    hero = tmp_path / "hero-registered.png"
    hero.write_bytes(b"H" * 3_000)
    AssetRegistry("default", ws=ws, make_thumbnails=False).register_file(hero, "images")  # copied into the registry
    assert main(["scan", "--json", "--workspace", str(ws.root)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 5 and len(report["registered"]) == 2  # style + unique; hero was registered already
    assert main(["duplicates", "--json", "--workspace", str(ws.root)]) == 0
    dup = json.loads(capsys.readouterr().out)
    by_size = {g["size"]: g for g in dup["groups"]}
    assert by_size[40_000]["copies"] == 3 and by_size[40_000]["reclaimable"] == 80_000
    assert by_size[3_000]["copies"] == 2  # the library's hero.png and the registry's copy
    assert dup["reclaimable_bytes"] == 83_000
    assert all(Path(p["path"]).is_file() for g in dup["groups"] for p in g["paths"])  # nothing deleted
    assert main(["status", "--json", "--workspace", str(ws.root)]) == 0
    status = {r["name"]: r for r in json.loads(capsys.readouterr().out)["roots"]}
    assert status["a"]["files"] == 3 and status["b"]["files"] == 2 and status["a"]["unidentified"] == 3
    assert (b / "backup" / "style-copy.safetensors.asset.json").exists() is False  # b holds copies, no asset


def test_cli_names_an_unknown_root(ws, tmp_path, capsys):
    two_roots(ws, tmp_path)
    assert main(["scan", "nowhere", "--workspace", str(ws.root)]) == 2
    assert "not a configured library root" in capsys.readouterr().err


def test_scan_progress_reaches_hooks_and_a_second_scan_is_refused_while_one_runs(ws, tmp_path):
    two_roots(ws, tmp_path)
    seen: list[dict] = []
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    scan_library(ws=ws, registry=reg, progress=seen.append)
    assert seen[-1]["phase"] == "done" and any(s["phase"] == "hash" and s["files_done"] == 5 for s in seen)
    topics = [e["event"] for e in read_events(open_store(ws).conn, after_id=0, limit=1000)]
    assert "on_library_scan_started" in topics and "on_library_scan_finished" in topics
    assert "on_library_scan_progress" in topics
    busy = Scanner(ws, "default", registry=reg)
    busy.lock.acquire()
    try:
        try:
            Scanner(ws, "default", registry=reg).run()
        except ScanBusyError as exc:
            assert "already running" in str(exc)
        else:
            raise AssertionError("a second scan ran beside the first")
    finally:
        busy.lock.release()


def test_duplicates_report_of_one_copy_is_empty(ws, tmp_path):
    root = tmp_path / "one"
    write(root / "x.bin", b"x" * 10)
    update_config({"library": {"roots": [{"name": "one", "path": str(root)}]}}, ws)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    scan_library(ws=ws, registry=reg)
    assert duplicate_report(reg)["groups"] == []
