"""Library roots scanned in place: first scan, unchanged rescan (no read), changed, moved, vanished,
symlink loops and unreadable files, in-place registry semantics."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from comfyvn.config import update_config
from comfyvn.hashforms import hash_bytes
from comfyvn.library.scan import Scanner, scan_library
from comfyvn.registry.sidecars import Sidecars
from comfyvn.studio.core.asset_registry import AssetRegistry

OLD_NS = 1_600_000_000 * 10**9  # outside the hash cache's racy window


def make(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def safetensors(payload: bytes, meta: dict | None = None) -> bytes:
    header = json.dumps(meta or {"__metadata__": {"ss_name": "x"}}).encode()
    return len(header).to_bytes(8, "little") + header + payload


@pytest.fixture
def models(ws, tmp_path) -> Path:
    root = tmp_path / "ComfyUI" / "models"
    make(root / "checkpoints" / "base.safetensors", safetensors(b"checkpoint" * 1000))
    make(root / "loras" / "style.safetensors", safetensors(b"lora bytes" * 300))
    make(root / "embeddings" / "neg.pt", b"embedding" * 50)
    make(root / "vae" / "sdxl_vae.safetensors", safetensors(b"vae" * 700))
    make(root / "upscale_models" / "4x.pth", b"upscale" * 80)
    make(root / "controlnet" / "canny.safetensors", safetensors(b"canny" * 90))
    make(root / "loras" / ".hidden.safetensors", b"hidden")
    update_config({"library": {"roots": [{"name": "comfy", "path": str(root), "layout": "comfyui",
                                          "sidecars": "mirror"}]}}, ws)
    return root


def reg(ws) -> AssetRegistry:
    return AssetRegistry("default", ws=ws, make_thumbnails=False)


def test_first_scan_registers_every_model_in_place_with_its_type(ws, models):
    report = scan_library(ws=ws, registry=reg(ws))
    assert report.files == 6 and report.new_files == 6 and len(report.registered) == 6
    assert report.errors == []
    r = reg(ws)
    types = {Path(a["abs_path"]).name: a["type"] for a in r.iter_assets()}
    assert types == {"base.safetensors": "checkpoints", "style.safetensors": "loras", "neg.pt": "embeddings",
                     "sdxl_vae.safetensors": "vae", "4x.pth": "upscale_models", "canny.safetensors": "controlnet"}
    lora = r.find_by_hash(hash_bytes((models / "loras" / "style.safetensors").read_bytes()).sha256)
    assert lora["abs_path"] == str(models / "loras" / "style.safetensors")  # registered where it lies
    assert r.resolve_path(lora["uid"]) == models / "loras" / "style.safetensors"
    # mirror sidecars: inside the workspace, nothing written into the user's folder
    assert Path(lora["sidecar"]).is_file() and str(ws.root) in lora["sidecar"]
    assert not list(models.rglob("*.asset.json"))
    assert r.read_sidecar(lora["uid"])["uid"] == lora["uid"]
    assert not (r.assets_root / "@library").exists()


def test_rescan_of_an_unchanged_tree_reads_no_file(ws, models):
    scan_library(ws=ws, registry=reg(ws))
    scanner = Scanner(ws, "default", registry=reg(ws))
    report = scanner.run()
    assert report.unchanged == 6 and report.registered == [] and report.changed == []
    counters = scanner.cache.counters()
    assert counters["files_read"] == 0 and counters["bytes_read"] == 0
    assert report.hashed_files == 0 and report.hashed_bytes == 0


def test_a_changed_file_is_read_again_and_its_new_content_registered(ws, models):
    r = reg(ws)
    scan_library(ws=ws, registry=r)
    path = models / "embeddings" / "neg.pt"
    old_uid = hash_bytes(path.read_bytes()).sha256[:16]
    make(path, b"new embedding bytes" * 10, mtime_ns=OLD_NS + 10**9)
    report = scan_library(ws=ws, registry=r)
    assert report.changed == ["comfy:embeddings/neg.pt"]
    assert report.hashed_files == 1
    new_uid = hash_bytes(path.read_bytes()).sha256[:16]
    assert new_uid in report.registered
    assert r.get_asset(new_uid)["abs_path"] == str(path)
    assert [m["uid"] for m in report.missing] == [old_uid]  # the old bytes are nowhere any more
    assert path.read_bytes() == b"new embedding bytes" * 10  # nothing touched the user's file


def test_a_moved_file_is_recognised_by_content_not_deleted_and_added(ws, models, tmp_path):
    r = reg(ws)
    scan_library(ws=ws, registry=r)
    src = models / "loras" / "style.safetensors"
    uid = hash_bytes(src.read_bytes()).sha256[:16]
    before = r.get_asset(uid)
    dest = models / "loras" / "sdxl" / "style-renamed.safetensors"
    dest.parent.mkdir()
    os.rename(src, dest)
    report = scan_library(ws=ws, registry=r)
    assert report.moved and report.moved[0]["uid"] == uid
    assert report.registered == [] and report.missing == []
    after = r.get_asset(uid)
    assert after["abs_path"] == str(dest) and after["created_at"] == before["created_at"]
    assert after["version"] == before["version"] + 1
    assert Path(after["sidecar"]).is_file() and not Path(before["sidecar"]).exists()
    assert report.hashed_files == 0  # a rename keeps the inode: the hash cache answers


def test_a_vanished_file_is_reported_missing_and_found_again_elsewhere(ws, models, tmp_path):
    r = reg(ws)
    other = tmp_path / "archive"
    other.mkdir()
    update_config({"library": {"roots": [
        {"name": "comfy", "path": str(models), "layout": "comfyui", "sidecars": "mirror"},
        {"name": "archive", "path": str(other), "layout": "plain", "sidecars": "beside"}]}}, ws)
    scan_library(ws=ws, registry=r)
    path = models / "upscale_models" / "4x.pth"
    data = path.read_bytes()
    uid = hash_bytes(data).sha256[:16]
    path.unlink()
    report = scan_library(ws=ws, registry=r)
    assert report.vanished == ["comfy:upscale_models/4x.pth"]
    assert [m["uid"] for m in report.missing] == [uid]
    assert r.get_asset(uid) is not None  # the row stays: a missing file is not a removal
    make(other / "upscale" / "4x-copy.pth", data, mtime_ns=OLD_NS + 5)  # a copy from a backup: new inode
    report = scan_library(ws=ws, registry=r)
    assert [m["uid"] for m in report.moved] == [uid] and report.registered == []
    asset = r.get_asset(uid)
    assert asset["abs_path"] == str(other / "upscale" / "4x-copy.pth")
    assert Path(asset["sidecar"]) == other / "upscale" / "4x-copy.pth.asset.json"  # this root's sidecars: beside


def test_removing_an_in_place_asset_never_touches_its_file(ws, models):
    r = reg(ws)
    scan_library(ws=ws, registry=r)
    path = models / "vae" / "sdxl_vae.safetensors"
    uid = hash_bytes(path.read_bytes()).sha256[:16]
    sidecar = Path(r.get_asset(uid)["sidecar"])
    r.remove_asset_record(uid, delete_files=True)
    assert path.is_file() and not sidecar.exists()


def test_hook_payloads_of_an_in_place_asset_name_its_file_and_its_mirror_sidecar(ws, models):
    """The registry's parts (records, removal) resolve @library paths in hook payloads too, not
    only in the records callers read: a listener never sees a path inside the assets root."""
    r = reg(ws)
    seen: list[tuple[str, dict]] = []
    hooks = {event: (lambda payload, event=event: seen.append((event, payload)))
             for event in (r.HOOK_ASSET_REGISTERED, r.HOOK_SIDECAR_WRITTEN, r.HOOK_ASSET_REMOVED)}
    for event, callback in hooks.items():
        r.add_hook(event, callback)
    try:
        scan_library(ws=ws, registry=r)
        path = models / "vae" / "sdxl_vae.safetensors"
        uid = hash_bytes(path.read_bytes()).sha256[:16]
        sidecar = r.get_asset(uid)["sidecar"]
        assert str(ws.root) in sidecar and Path(sidecar).is_file()  # the mirror inside the workspace
        r.remove_asset_record(uid)
    finally:
        for event, callback in hooks.items():
            r.remove_hook(event, callback)
    mine = {event: payload for event, payload in seen if payload["uid"] == uid}
    assert mine[r.HOOK_ASSET_REGISTERED]["path"] == str(path)
    assert mine[r.HOOK_ASSET_REGISTERED]["sidecar"] == sidecar
    assert mine[r.HOOK_SIDECAR_WRITTEN]["sidecar"] == sidecar
    assert mine[r.HOOK_ASSET_REMOVED]["path"] == str(path) and mine[r.HOOK_ASSET_REMOVED]["sidecar"] == sidecar
    assert path.is_file() and not Path(sidecar).exists()  # removed to the trash: only the sidecar went


def test_symlink_loop_and_unreadable_file_are_reported_and_the_scan_goes_on(ws, models, monkeypatch):
    (models / "loras" / "loop").symlink_to(models / "loras", target_is_directory=True)
    (models / "loras" / "dangling.safetensors").symlink_to(models / "nowhere")
    locked = make(models / "checkpoints" / "locked.ckpt", b"secret" * 100)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads mode-000 files: make the kernel's EACCES happen for this one
        real_open = os.open

        def guarded(path, flags, *args, **kwargs):
            if os.fspath(path) == str(locked):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)
        monkeypatch.setattr(os, "open", guarded)
    report = scan_library(ws=ws, registry=reg(ws))
    errors = {Path(e["path"]).name: e["error"] for e in report.errors}
    assert "symlink loop" in errors["loop"]
    assert "broken symlink" in errors["dangling.safetensors"]
    assert "Permission denied" in errors["locked.ckpt"]
    assert len(report.registered) == 6  # every other file made it


def test_roots_must_be_configured_and_valid(ws, tmp_path):
    with pytest.raises(ValueError, match="no library roots configured"):
        scan_library(ws=ws, registry=reg(ws))
    update_config({"library": {"roots": [{"name": "x", "path": "relative/path", "layout": "plain"}]}}, ws)
    with pytest.raises(ValueError, match="must be absolute"):
        scan_library(ws=ws, registry=reg(ws))
    update_config({"library": {"roots": [{"name": "x", "path": str(tmp_path), "layout": "a1111"}]}}, ws)
    with pytest.raises(ValueError, match="layout"):
        scan_library(ws=ws, registry=reg(ws))


def test_an_unplugged_root_is_reported_and_its_files_not_marked_missing(ws, models, tmp_path):
    r = reg(ws)
    scan_library(ws=ws, registry=r)
    models.rename(tmp_path / "unplugged")
    report = scan_library(ws=ws, registry=r)
    assert "root not readable" in report.errors[0]["error"]
    assert report.vanished == [] and report.missing == []


def test_the_enforcer_audits_in_place_assets_and_changes_no_library_file(ws, models):
    from comfyvn.registry.rebuild import audit_sidecars

    r = reg(ws)
    scan_library(ws=ws, registry=r)
    before = {p: p.read_bytes() for p in models.rglob("*") if p.is_file()}
    report = audit_sidecars(r, fix=False)
    # tags come from folders and names at registration; a licence only from identification
    assert {f["kind"] for f in report["findings"]} == {"missing_license"}, report["findings"]
    lora = models / "loras" / "style.safetensors"
    uid = hash_bytes(lora.read_bytes()).sha256[:16]
    Path(r.get_asset(uid)["sidecar"]).unlink()
    (models / "vae" / "sdxl_vae.safetensors").unlink()
    del before[models / "vae" / "sdxl_vae.safetensors"]
    report = audit_sidecars(r, fix=True)
    kinds = {(f["kind"], f["uid"]) for f in report["findings"]}
    assert ("missing_sidecar", uid) in kinds and any(k == "missing_file" for k, _ in kinds)
    assert Path(r.get_asset(uid)["sidecar"]).is_file()  # rewritten into the mirror
    assert {p: p.read_bytes() for p in models.rglob("*") if p.is_file()} == before  # nothing in the library touched


def test_a_removed_in_place_asset_is_registered_again_by_the_next_scan(ws, models):
    """The roots describe what is on disk: an asset removed from the registry while its file stays
    comes back at the next scan (found through the removal events, not a query over every file)."""
    r = reg(ws)
    scan_library(ws=ws, registry=r)
    uid = hash_bytes((models / "embeddings" / "neg.pt").read_bytes()).sha256[:16]
    r.remove_asset_record(uid)
    report = scan_library(ws=ws, registry=r)
    assert report.registered == [uid] and report.hashed_files == 0
    assert r.get_asset(uid)["abs_path"] == str(models / "embeddings" / "neg.pt")
    assert scan_library(ws=ws, registry=r).registered == []


def test_a_file_name_that_is_not_utf8_text_is_reported_and_the_scan_goes_on(ws, models):
    with open(os.path.join(os.fsencode(models / "loras"), b"bad\xff.safetensors"), "wb") as fh:
        fh.write(b"not utf-8 named")
    make(models / "loras" / "two\nlines.safetensors", b"newline in the name")
    report = scan_library(ws=ws, registry=reg(ws))
    refused = [e for e in report.errors if "not printable UTF-8" in e["error"]]
    assert len(refused) == 2 and "bad\\xff" in " ".join(e["path"] for e in refused)
    assert len(report.registered) == 6  # every other file made it
    json.dumps(report.to_dict())  # the report itself is valid JSON text


def test_the_workspace_internals_and_credentials_are_never_registered(ws, models):
    (models / "loras" / "db-link").symlink_to(ws.db_path)
    (models / "loras" / "ws-config").symlink_to(ws.root / "config", target_is_directory=True)
    os.link(ws.config_file, models / "loras" / "hardlinked-config.safetensors")
    make(models / "loras" / "id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----")
    make(models / "loras" / "server.pem", b"-----BEGIN CERTIFICATE-----")
    report = scan_library(ws=ws, registry=reg(ws))
    skipped = {Path(e["path"]).name for e in report.errors}
    assert {"db-link", "ws-config", "hardlinked-config.safetensors", "id_rsa", "server.pem"} <= skipped
    assert len(report.registered) == 6
    r = reg(ws)
    assert not [a for a in r.iter_assets() if "db-link" in a["path"] or "config" in a["path"]]


def test_a_failed_in_place_batch_registers_nothing_and_leaves_no_sidecar_beside_the_files(ws, tmp_path,
                                                                                       monkeypatch):
    folder = tmp_path / "beside"
    files = [make(folder / f"m{i}.safetensors", safetensors(b"model %d" % i * 100)) for i in range(2)]
    update_config({"library": {"roots": [{"name": "b", "path": str(folder), "layout": "plain",
                                          "sidecars": "beside"}]}}, ws)
    items = [{"rel": f"@library/b/{p.name}", "asset_type": "models", "size": p.stat().st_size,
              "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in files]
    real_write = Sidecars.write
    calls = []

    def write_then_fail(self, rec):
        calls.append(rec["uid"])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, rec)

    monkeypatch.setattr(Sidecars, "write", write_then_fail)
    r = reg(ws)
    with pytest.raises(OSError, match="No space"):
        r.register_in_place(items)
    assert len(calls) == 2 and [r.get_asset(i["sha256"][:16]) for i in items] == [None, None]
    assert sorted(p.name for p in folder.iterdir()) == ["m0.safetensors", "m1.safetensors"]  # no stray sidecar
    monkeypatch.setattr(Sidecars, "write", real_write)
    assert [a["abs_path"] for a in r.register_in_place(items)] == [str(p) for p in files]
    assert all(Path(str(p) + ".asset.json").is_file() for p in files)


def test_the_walk_reports_progress_per_folder(ws, models):
    scan_library(ws=ws, registry=reg(ws))
    states: list[dict] = []
    Scanner(ws, "default", registry=reg(ws)).run(progress=states.append)
    seen = [s["files_seen"] for s in states if s["phase"] == "walk" and "files_seen" in s]
    assert seen == sorted(seen) and seen[-1] == 6 and len(seen) >= 6  # a folder at a time, unchanged files too


def test_rescan_fast_path_still_sees_symlinked_files_and_a_file_turned_folder(ws, models, tmp_path):
    outside = make(tmp_path / "elsewhere" / "linked.safetensors", safetensors(b"linked" * 100))
    (models / "loras" / "linked.safetensors").symlink_to(outside)
    scan_library(ws=ws, registry=reg(ws))
    scanner = Scanner(ws, "default", registry=reg(ws))
    report = scanner.run()
    assert report.unchanged == 7 and scanner.cache.counters()["files_read"] == 0  # the symlinked one too
    (models / "embeddings" / "neg.pt").unlink()
    make(models / "embeddings" / "neg.pt" / "inner.pt", b"inner" * 30)  # the name is a folder now
    report = Scanner(ws, "default", registry=reg(ws)).run()
    assert report.vanished == ["comfy:embeddings/neg.pt"] and report.new_files == 1
    assert report.files == 7 and report.unchanged == 6


def test_a_root_that_links_to_the_workspace_data_folder_is_skipped_and_reported(ws, tmp_path):
    r = reg(ws)
    r.list_assets()  # the store, its lock files and the data folder exist
    (ws.data_dir / "stray.bin").write_bytes(b"not an asset")
    link = tmp_path / "rootlink"
    link.symlink_to(ws.data_dir)
    update_config({"library": {"roots": [{"name": "dbroot", "path": str(link), "layout": "plain"}]}}, ws)
    report = scan_library(ws=ws, registry=r)
    assert r.list_assets() == [] and report.registered == []
    assert any("root skipped" in e["error"] for e in report.errors), report.errors


def test_a_fifo_in_a_root_is_reported_never_opened(ws, models):
    os.mkfifo(models / "loras" / "pipe.safetensors")
    r = reg(ws)
    for _ in range(2):  # the first scan and a rescan both say so
        report = scan_library(ws=ws, registry=r)
        assert [e["path"] for e in report.errors if "not a regular file" in e["error"]] == [
            str(models / "loras" / "pipe.safetensors")]
    assert not any(a["path"].endswith("pipe.safetensors") for a in r.list_assets())
