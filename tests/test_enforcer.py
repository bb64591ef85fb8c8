"""The sidecar enforcer: audit_sidecars(), rebuild_from_disk() and the CLI entry points."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyvn.fsutil import owner_token
from comfyvn.hooks import get_hook_bus
from comfyvn.registry import FINDING_KINDS, audit_sidecars, derive_license, derive_tags, rebuild_from_disk
from comfyvn.registry.rebuild import main
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry, split_metadata

REPO = Path(__file__).resolve().parents[1]
FINDING_KEYS = {"kind", "uid", "path", "detail", "fixed"}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def png(path: Path, color="blue") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 32), color).save(path)
    return path


def snapshot(ws) -> dict:
    """Every file and folder of the workspace (but logs and the raw database files), plus the
    database's logical content: what a dry run must leave exactly as it was."""
    tree = {}
    for p in sorted(ws.root.rglob("*")):
        rel = p.relative_to(ws.root).as_posix()
        if rel.startswith("logs") or p.name.startswith(ws.db_path.name):
            continue
        tree[rel] = (sha(p), p.stat().st_mtime_ns) if p.is_file() else "dir"
    store = open_store(ws)
    db = {t: [tuple(row) for row in store.query(f"SELECT * FROM {t} ORDER BY 1, 2")]
          for t in ("assets", "asset_tags", "thumbnails", "file_intents", "events")}
    return {"tree": tree, "db": db}


def kinds(report: dict, *, open_only: bool = False) -> list[str]:
    return sorted(f["kind"] for f in report["findings"] if not (open_only and f["fixed"]))


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry("default")


@pytest.fixture
def good(reg, tmp_path) -> list[dict]:
    """Three well-kept assets (tags, licence, thumbnails ready)."""
    recs = [reg.register_file(png(tmp_path / "in" / "hero.png"), "sprites", tags=["hero"], license_tag="cc0"),
            reg.register_file(put(tmp_path / "in" / "lore.txt", "lore"), "docs", tags=["lore"], license_tag="cc0"),
            reg.register_file(put(tmp_path / "in" / "m.safetensors", os.urandom(500)), "models", tags=["m"],
                              license_tag="mit")]
    assert reg.wait_for_thumbnails(30)
    return recs


def dead_owner(subprocess_env) -> str:
    """The owner token of a process that has exited."""
    out = subprocess.run([sys.executable, "-c", "from comfyvn.fsutil import owner_token; print(owner_token())"],
                         env=subprocess_env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_clean_registry_passes(reg, good, capsys):
    report = audit_sidecars(reg)
    assert report["ok"] is True and report["findings"] == [] and report["counts"] == {}
    assert report["project"] == "default" and report["unfilled"] == []
    assert main(["--dry-run"]) == 0
    assert "OK: no problems found" in capsys.readouterr().out


@pytest.fixture
def broken(ws, reg, good, tmp_path, subprocess_env) -> dict:
    """One of every problem the enforcer knows."""
    root = reg.assets_root
    hero, lore, model = good
    # missing sidecar, invalid sidecar, a sidecar edited by hand
    extra = [reg.register_file(put(tmp_path / "in" / f"e{i}.txt", f"extra {i}"), "docs", tags=["e"],
                               license_tag="cc0") for i in range(4)]
    Path(extra[0]["sidecar"]).unlink()
    Path(extra[1]["sidecar"]).write_text("{ this is not json")
    edited = json.loads(Path(extra[2]["sidecar"]).read_text())
    edited["tags"] = ["edited-by-hand"]
    Path(extra[2]["sidecar"]).write_text(json.dumps(edited))
    # a file whose bytes changed (same size), a file that vanished, a file moved by hand
    Path(lore["abs_path"]).write_text("LORE")
    Path(model["abs_path"]).unlink()
    moved_to = root / "docs" / "archive" / "e3.txt"
    moved_to.parent.mkdir(parents=True)
    shutil.move(extra[3]["abs_path"], moved_to)
    # a deleted thumbnail
    reg.resolve_thumbnail_path(hero["uid"], 512).unlink()
    # an asset without tags and licence
    bare = reg.register_file(put(tmp_path / "in" / "bare_cc-by-sa-4.0.txt", "bare"), "docs")
    # a file without row, a copy of a registered asset, a sidecar with its file but no row, an orphan sidecar
    put(root / "backgrounds" / "forest" / "dark_forest_01.txt", "forest")
    put(root / "sprites" / "copy-of-hero.png", Path(hero["abs_path"]).read_bytes())
    put(root / "sfx" / "boom.txt", "boom")
    put(root / "sfx" / "boom.txt.asset.json", json.dumps({
        "uid": "0" * 16, "type": "sfx", "tags": ["explosion"], "license": "cc0", "meta": {"by": "ann"},
        "origin": "freesound", "created_at": "2020-01-02T03:04:05.000Z",
        "provenance": {"source": "https://freesound.example/1", "provider": "freesound"}}))
    put(root / "gone.txt.asset.json", json.dumps({"uid": "1" * 16}))
    # a dead process's temp file and its interrupted registration
    token = dead_owner(subprocess_env)
    put(root / "docs" / f".lore.txt.asset.json.{token}.abcd1234.tmp", "{half")
    with reg.db.transaction() as conn:
        conn.execute("INSERT INTO file_intents(project_id, uid, op, src, dest, created_at, owner)"
                     " VALUES ('default', 'feedfeedfeedfeed', 'copy', NULL, 'docs/never.txt', 0, ?)", (token,))
    return {"extra": extra, "bare": bare, "moved_to": moved_to, "good": good}


def test_dry_run_finds_every_kind_and_changes_nothing(ws, reg, broken):
    before = snapshot(ws)
    report = audit_sidecars(reg, fix=False)
    assert snapshot(ws) == before
    assert report["ok"] is False and report["dry_run"] is True
    assert all(set(f) == FINDING_KEYS for f in report["findings"])
    assert not any(f["fixed"] for f in report["findings"])
    assert set(report["counts"]) == set(FINDING_KINDS)
    by_path = {(f["kind"], f["path"]): f for f in report["findings"]}
    extra = broken["extra"]
    assert ("missing_sidecar", extra[0]["path"]) in by_path
    assert ("invalid_sidecar", extra[1]["path"]) in by_path
    assert "tags" in by_path[("sidecar_mismatch", extra[2]["path"])]["detail"]
    assert ("file_changed", "docs/lore.txt") in by_path
    assert ("missing_file", "models/m.safetensors") in by_path
    assert "moved by hand" in by_path[("missing_file", extra[3]["path"])]["detail"]
    assert ("missing_thumbnail", "sprites/hero.png") in by_path
    assert ("missing_tags", broken["bare"]["path"]) in by_path and ("missing_license", broken["bare"]["path"]) in by_path
    assert ("unregistered_file", "backgrounds/forest/dark_forest_01.txt") in by_path
    assert ("duplicate_file", "sprites/copy-of-hero.png") in by_path
    assert ("orphan_sidecar", "sfx/boom.txt") in by_path
    assert ("orphan_sidecar", "gone.txt.asset.json") in by_path
    assert ("interrupted_operation", "docs/never.txt") in by_path
    assert any(k == "stale_temp_file" for k, _ in by_path)
    assert report["counts"]["missing_file"] == 2


def test_cli_dry_run_json_changes_nothing_on_disk(ws, broken, subprocess_env):
    before = snapshot(ws)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "assets_enforcer.py"), "--dry-run", "--json",
                           "--fill-metadata", "--overwrite"], env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert {"ok", "project", "counts", "findings", "unfilled"} <= set(report)
    assert report["ok"] is False and sum(report["counts"].values()) == len(report["findings"])
    assert snapshot(ws) == before


def test_fix_repairs_what_is_safe_and_reports_the_rest(ws, reg, broken):
    report = audit_sidecars(reg, fix=True)
    open_kinds = kinds(report, open_only=True)
    # an existing sidecar is only replaced with --overwrite; lost or changed bytes need a person
    assert open_kinds == sorted(["invalid_sidecar", "sidecar_mismatch", "file_changed", "missing_file",
                                 "duplicate_file", "missing_tags", "missing_license"]
                                + ["missing_tags", "missing_license"])  # the newly registered forest file
    extra = broken["extra"]
    assert reg.read_sidecar(extra[0]["uid"]) == reg.sidecar_document(reg.get_asset(extra[0]["uid"]))
    assert Path(extra[1]["sidecar"]).read_text() == "{ this is not json"  # untouched without --overwrite
    assert reg.get_asset(extra[3]["uid"])["path"] == "docs/archive/e3.txt"  # relocated
    assert reg.read_sidecar(extra[3]["uid"])["path"] == "docs/archive/e3.txt"
    assert reg.resolve_thumbnail_path(broken["good"][0]["uid"], 512) is not None
    forest = reg.list_assets(text="dark_forest")[0]
    assert forest["type"] == "backgrounds" and Path(forest["sidecar"]).exists()
    boom = reg.list_assets(text="boom.txt")[0]
    assert boom["type"] == "sfx" and boom["tags"] == ["explosion"] and boom["license"] == "cc0"
    assert split_metadata(boom["meta"])[0] == {"by": "ann"} and boom["origin"] == "freesound"
    assert boom["provenance"]["source"] == "https://freesound.example/1"
    assert reg.read_sidecar(boom["uid"])["created_at"] == "2020-01-02T03:04:05.000Z"
    assert not (reg.assets_root / "gone.txt.asset.json").exists()
    assert list(ws.trash_dir.rglob("gone.txt.asset.json"))
    assert not list(reg.assets_root.rglob("*.tmp"))
    assert reg.db.query_one("SELECT COUNT(*) FROM file_intents")[0] == 0
    assert not (reg.assets_root / "sprites" / "copy-of-hero.png.asset.json").exists()  # duplicates stay unregistered
    again = audit_sidecars(reg)
    assert kinds(again) == open_kinds  # what was fixed stays fixed


def test_overwrite_and_fill_metadata_fix_the_rest_through_the_registry_api(ws, reg, broken):
    calls = []
    for event in AssetRegistry.HOOK_EVENTS:
        reg.add_hook(event, lambda p, e=event: calls.append((e, p["uid"])))
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    report = audit_sidecars(reg, fix=True, overwrite=True, fill_metadata=True)
    extra, bare = broken["extra"], broken["bare"]
    # left open: lost/changed bytes and a duplicate need a person; the forest file has no licence to derive
    assert kinds(report, open_only=True) == ["duplicate_file", "file_changed", "missing_file", "missing_license"]
    for uid in (extra[1]["uid"], extra[2]["uid"]):
        assert reg.read_sidecar(uid) == reg.sidecar_document(reg.get_asset(uid))
        assert (AssetRegistry.HOOK_ASSET_META_UPDATED, uid) in calls
        assert (AssetRegistry.HOOK_SIDECAR_WRITTEN, uid) in calls
    assert reg.get_asset(extra[2]["uid"])["tags"] == ["e"]  # the database wins over a hand edit
    filled = reg.get_asset(bare["uid"])
    assert filled["license"] == "cc-by-sa-4.0" and filled["tags"] == ["bare"]
    assert (AssetRegistry.HOOK_ASSET_META_UPDATED, bare["uid"]) in calls
    forest = reg.list_assets(text="dark_forest")[0]
    assert forest["tags"] == ["forest", "dark"]
    assert report["unfilled"] == [{"uid": forest["uid"], "path": forest["path"], "field": "license",
                                   "reason": "no licence token in the file name and no LICENSE file in its folder "
                                             "or above"}]
    assert report["summary"]["sidecars_rewritten"] >= reg.count() - 2
    topics = [e["event"] for e in bus.events_after(start, limit=5000)]
    assert "on_asset_meta_updated" in topics and "on_asset_sidecar_written" in topics


def test_overwrite_rewrites_every_existing_sidecar(reg, good):
    stamp = {r["uid"]: Path(r["sidecar"]).stat().st_mtime_ns for r in good}
    written = []
    reg.add_hook(AssetRegistry.HOOK_SIDECAR_WRITTEN, lambda p: written.append(p["uid"]))
    report = audit_sidecars(reg, fix=True, overwrite=True)
    assert report["ok"] and report["summary"]["sidecars_rewritten"] == 3
    assert sorted(written) == sorted(stamp)
    assert all(Path(r["sidecar"]).stat().st_mtime_ns != stamp[r["uid"]] for r in good)


def test_quick_mode_compares_sizes_only(reg, good):
    lore = good[1]
    Path(lore["abs_path"]).write_text("LORE")  # same size
    assert "file_changed" in kinds(audit_sidecars(reg))
    assert "file_changed" not in kinds(audit_sidecars(reg, verify_hashes=False))
    Path(lore["abs_path"]).write_text("a longer lore")
    assert "file_changed" in kinds(audit_sidecars(reg, verify_hashes=False))


def test_failed_thumbnail_is_reported_and_stays_open(reg, tmp_path):
    rec = reg.register_file(put(tmp_path / "broken.png", b"not a png"), "sprites", tags=["b"], license_tag="cc0")
    assert reg.wait_for_thumbnails(30)
    report = audit_sidecars(reg, fix=True)
    finding = next(f for f in report["findings"] if f["kind"] == "missing_thumbnail")
    assert finding["uid"] == rec["uid"] and finding["fixed"] is False and "failed" in finding["detail"]
    assert report["ok"] is False


# ------------------------------------------------------------------------------ fill metadata
@pytest.mark.parametrize(("name", "licence"), [
    ("tree_cc0.png", "cc0"), ("tree-CC-BY-4.0.png", "cc-by-4.0"), ("tree_cc_by_sa_4_0.png", "cc-by-sa-4.0"),
    ("tree (cc-by-nc-nd-3.0).png", "cc-by-nc-nd-3.0"), ("accident.png", None), ("occ0.png", None),
])
def test_licence_tokens_in_file_names(tmp_path, name, licence):
    assert derive_license(tmp_path, f"sprites/{name}")[0] == licence


@pytest.mark.parametrize(("text", "licence"), [
    ("SPDX-License-Identifier: CC-BY-SA-4.0\n\nSome words.", "cc-by-sa-4.0"),
    ("CC0-1.0\n", "cc0"),
    ("Creative Commons Legal Code\n\nCC0 1.0 Universal\n...", "cc0"),
    ("Attribution 4.0 International\n\nCreative Commons Attribution 4.0 International Public License", "cc-by-4.0"),
    ("MIT License\n\nCopyright (c) 2024 someone", "mit"),
    ("All rights reserved, ask me first.", None),
])
def test_licence_files_in_the_folder_or_above(tmp_path, text, licence):
    put(tmp_path / "packs" / "LICENSE.txt", text)
    put(tmp_path / "packs" / "forest" / "tree.png", "x")
    found, source = derive_license(tmp_path, "packs/forest/tree.png")
    assert found == licence
    if licence:
        assert "packs/LICENSE.txt" in source
    else:
        assert "not recognised" in source and "SPDX-License-Identifier" in source


def test_the_nearest_licence_wins_and_a_name_token_beats_files(tmp_path):
    put(tmp_path / "LICENSE", "SPDX-License-Identifier: MIT")
    put(tmp_path / "packs" / "license.txt", "SPDX-License-Identifier: CC-BY-4.0")
    assert derive_license(tmp_path, "packs/a/b.png")[0] == "cc-by-4.0"
    assert derive_license(tmp_path, "other/b.png")[0] == "mit"
    assert derive_license(tmp_path, "packs/a/b_cc0.png")[0] == "cc0"


def test_tags_from_folders_and_file_names():
    assert derive_tags("characters/alice/alice_smile_02_cc0.png", "characters") == ["alice", "smile"]
    assert derive_tags("backgrounds/Sci Fi/Neon-City final v2.jpg", "backgrounds") == ["sci-fi", "neon", "city"]
    assert derive_tags("x/1234.png", "x") == []


def test_fill_metadata_reports_what_it_could_not_fill(reg, tmp_path):
    rec = reg.register_file(put(tmp_path / "0001.txt", "numbers"), "docs")
    report = audit_sidecars(reg, fix=True, fill_metadata=True)
    assert {(u["uid"], u["field"]) for u in report["unfilled"]} == {(rec["uid"], "tags"), (rec["uid"], "license")}
    assert all(u["reason"] for u in report["unfilled"]) and report["ok"] is False
    assert reg.get_asset(rec["uid"])["tags"] == []


def test_fill_metadata_dry_run_says_what_it_would_set(ws, reg, tmp_path):
    rec = reg.register_file(put(tmp_path / "knight_cc0.txt", "knight"), "docs")
    before = snapshot(ws)
    report = audit_sidecars(reg, fix=False, fill_metadata=True)
    assert snapshot(ws) == before
    details = {f["kind"]: f["detail"] for f in report["findings"] if f["uid"] == rec["uid"]}
    assert "would set ['knight']" in details["missing_tags"] and "would set 'cc0'" in details["missing_license"]


# ------------------------------------------------------------------------------ rebuild
def test_rebuild_restores_a_project_copied_into_a_new_workspace(ws, reg, tmp_path, monkeypatch):
    recs = [reg.register_file(png(tmp_path / "in" / "a.png"), "sprites", tags=["a"], license_tag="cc0",
                              metadata={"title": "A"}, provenance={"provider": "civitai", "terms_acknowledged": True}),
            reg.register_file(put(tmp_path / "in" / "b.txt", "b"), "docs", dest_relative="lore/deep/",
                              tags=["b"], license_tag="mit")]
    new_home = tmp_path / "new-workspace"
    shutil.copytree(reg.assets_root, new_home / "data" / "assets" / "default")
    monkeypatch.setenv("COMFYVN_HOME", str(new_home))
    result = rebuild_from_disk("default")
    assert sorted(r["uid"] for r in result["registered"]) == sorted(r["uid"] for r in recs)
    fresh = AssetRegistry("default")
    for old in recs:
        new = fresh.get_asset(old["uid"])
        for key in ("type", "path", "hash", "bytes", "tags", "license", "meta", "origin", "provenance"):
            assert new[key] == old[key], key
        assert new["created_at"] == pytest.approx(old["created_at"], abs=0.001)
    assert fresh.wait_for_thumbnails(30) and fresh.resolve_thumbnail_path(recs[0]["uid"]) is not None
    assert audit_sidecars(fresh)["ok"] is True
    assert rebuild_from_disk("default")["registered"] == []  # nothing left to do


def test_rebuild_dry_run_registers_nothing(ws, reg):
    put(reg.assets_root / "docs" / "new.txt", "new")
    before = snapshot(ws)
    result = rebuild_from_disk(reg, dry_run=True)
    assert [r["path"] for r in result["registered"]] == ["docs/new.txt"] and not result["registered"][0]["done"]
    assert snapshot(ws) == before and reg.count() == 0


def test_licence_files_and_hidden_files_are_not_assets(reg):
    put(reg.assets_root / "LICENSE", "SPDX-License-Identifier: CC0-1.0")
    put(reg.assets_root / "docs" / ".DS_Store", "junk")
    put(reg.assets_root / "docs" / "real.txt", "real")
    result = rebuild_from_disk(reg)
    assert [r["path"] for r in result["registered"]] == ["docs/real.txt"]
    assert reg.get_asset(result["registered"][0]["uid"])["license"] is None  # only --fill-metadata derives it


# ------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("entry", [
    [str(REPO / "tools" / "assets_enforcer.py")],
    ["-m", "comfyvn.registry.rebuild"],
])
def test_entry_points_exit_status_and_json(ws, reg, good, subprocess_env, entry):
    ok = subprocess.run([sys.executable, *entry, "--json"], env=subprocess_env, capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True and ok.stderr == ""
    Path(good[0]["sidecar"]).write_text("[]")
    bad = subprocess.run([sys.executable, *entry, "--json", "--project", "default", "--workspace", str(ws.root)],
                         env={k: v for k, v in subprocess_env.items() if k != "COMFYVN_HOME"},
                         capture_output=True, text=True, cwd="/")
    report = json.loads(bad.stdout)
    assert bad.returncode == 1 and report["counts"] == {"invalid_sidecar": 1}
    assert report["findings"][0]["path"] == good[0]["path"] and "not a JSON object" in report["findings"][0]["detail"]


def test_console_script(ws, reg, good, subprocess_env):
    script = Path(sys.executable).with_name("comfyvn-enforcer")
    proc = subprocess.run([str(script), "--dry-run"], env=subprocess_env, capture_output=True, text=True)
    assert proc.returncode == 0 and "OK: no problems found" in proc.stdout


def test_human_summary_and_exit_status(reg, good, capsys):
    Path(good[1]["sidecar"]).unlink()
    assert main(["--dry-run"]) == 1
    out = capsys.readouterr().out
    assert "dry run (nothing changed)" in out and "missing_sidecar" in out and "PROBLEMS REMAIN" in out
    assert main([]) == 0
    assert "OK: 1 findings, all fixed" in capsys.readouterr().out


def test_bad_configuration_and_usage_exit_2(ws, capsys):
    ws.config_file.write_text("{broken")
    assert main(["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(ws.config_file) in err and "not valid JSON" in err
    ws.config_file.write_text("{}")
    assert main(["--dry-run", "--project", "../escape"]) == 2
    assert "project_id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--no-such-flag"])
    assert exit_info.value.code == 2


def test_owner_token_names_this_process():
    assert str(os.getpid()) in owner_token().split("-")


def test_rebuild_leaves_a_file_another_process_is_registering_alone(ws):
    """A file placed by a live writer whose row has not committed yet is in flight, not unregistered."""
    import time as _time

    from comfyvn.fsutil import owner_token
    from comfyvn.registry.rebuild import rebuild_from_disk
    from comfyvn.studio.core.asset_registry import AssetRegistry

    reg = AssetRegistry(project_id="inflight", ws=ws)
    placed = reg.assets_root / "models" / "item.bin"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"bytes a live writer just linked into place")
    with reg.db.transaction() as conn:
        conn.execute("INSERT INTO file_intents(project_id, uid, op, src, dest, created_at, owner)"
                     " VALUES (?,?,?,?,?,?,?)", ("inflight", "0" * 16, "copy", None, "models/item.bin",
                                                 _time.time(), owner_token()))
    rebuild_from_disk(reg)
    assert reg.count() == 0 and placed.exists()
    with reg.db.transaction() as conn:
        conn.execute("DELETE FROM file_intents WHERE project_id = 'inflight'")
    rebuild_from_disk(reg)
    assert reg.count() == 1
