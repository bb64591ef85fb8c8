"""AssetRegistry: registration, dedup per project, path safety, sidecars, provenance, thumbnails,
hooks and their modder envelopes, queries, updates, bulk edits and removal."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest
from comfyvn_server_ext.handlers.base import error_row
from PIL import Image
from sqltrace import traced

import comfyvn.registry.placement as placemod
import comfyvn.registry.sidecars as sidecarmod
import comfyvn.studio.core.thumbnails as thumbmod
from comfyvn.fsutil import UnsafePathError
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.errors import IngestError
from comfyvn.registry.records import Records
from comfyvn.studio.core.asset_registry import (
    AssetCollisionError,
    AssetNotFoundError,
    AssetRegistry,
    AssetRegistryError,
    split_metadata,
)

SIDECAR_KEYS = {"uid", "type", "path", "hash", "bytes", "tags", "license", "origin", "version", "created_at",
                "meta", "preview", "provenance", "license_terms"}
SEED_PAYLOADS = {
    AssetRegistry.HOOK_ASSET_REGISTERED: {"uid", "type", "path", "meta", "sidecar"},
    AssetRegistry.HOOK_ASSET_META_UPDATED: {"uid", "type", "meta", "path", "sidecar"},
    AssetRegistry.HOOK_ASSET_REMOVED: {"uid", "type", "path", "sidecar"},
    AssetRegistry.HOOK_SIDECAR_WRITTEN: {"uid", "type", "sidecar", "rel_path"},
}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_file(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_png(folder: Path, name: str, size=(800, 400), color="red") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def make_wav(folder: Path, name: str, frames: int = 8000) -> Path:
    import math
    import struct
    import wave

    path = folder / name
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(i / 10))) for i in range(frames)))
    return path


def free(meta: dict) -> dict:
    """The free-form part of a record's meta (meta also shows tags, license, origin, version, preview)."""
    return split_metadata(meta)[0]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    return folder


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry(project_id="modding")


class Recorder:
    def __init__(self, registry: AssetRegistry) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.threads: list[str] = []
        self.registry = registry
        self.callbacks = {e: (lambda p, e=e: self._record(e, p)) for e in AssetRegistry.HOOK_EVENTS}
        for event, cb in self.callbacks.items():
            registry.add_hook(event, cb)

    def _record(self, event: str, payload: dict) -> None:
        self.calls.append((event, payload))
        self.threads.append(threading.current_thread().name)

    def events(self) -> list[str]:
        return [e for e, _ in self.calls]

    def detach(self) -> None:
        for event, cb in self.callbacks.items():
            self.registry.remove_hook(event, cb)


# ---------------------------------------------------------------------------------- basics
def test_works_with_nothing_but_a_project_id(ws, src):
    reg = AssetRegistry(project_id="modding")
    assert reg.assets_root == ws.assets_root / "modding"
    assert reg.thumbnails_root == ws.thumbnails_dir / "modding"
    rec = reg.register_file(make_file(src, "a.txt", "alpha"), "docs")
    assert Path(rec["abs_path"]).is_file() and str(ws.root) in rec["abs_path"]
    assert AssetRegistry().project_id == "default"


def test_roots_can_be_overridden(ws, src, tmp_path):
    reg = AssetRegistry("modding", assets_root=tmp_path / "elsewhere", thumbnails_root=tmp_path / "thumbs")
    rec = reg.register_file(make_png(src, "p.png"), "sprites")
    assert Path(rec["abs_path"]) == (tmp_path / "elsewhere" / "sprites" / "p.png").resolve()
    assert reg.wait_for_thumbnails(30)
    assert str(reg.resolve_thumbnail_path(rec["uid"])).startswith(str((tmp_path / "thumbs").resolve()))


def test_bad_project_ids_are_rejected(ws):
    for bad in ("../x", "a/b", "", " x"):
        with pytest.raises(ValueError, match="project_id"):
            AssetRegistry(project_id=bad) if bad else AssetRegistry(project_id="-bad")


def test_uid_is_the_first_16_hex_digits_of_sha256_and_bytes_are_unchanged(reg, src):
    source = make_file(src, "model.safetensors", os.urandom(300_000))
    digest = sha(source)
    rec = reg.register_file(source, "models")
    assert rec["uid"] == digest[:16] and rec["hash"] == digest
    assert rec["bytes"] == 300_000
    assert sha(rec["abs_path"]) == digest
    assert source.exists() and sha(source) == digest  # copy=True keeps the source


def test_copy_false_moves_only_a_hand_off_file_by_rename(reg, src):
    """A staged ingest file (the workspace's own hand-off) is moved; anything else never is."""
    source = make_file(reg.ws.staging_dir, "0123456789ab-big.bin", os.urandom(50_000))
    digest = sha(source)
    inode = source.stat().st_ino
    rec = reg.register_file(source, "models", copy=False)
    assert not source.exists()
    assert Path(rec["abs_path"]).stat().st_ino == inode  # moved, not rewritten
    assert sha(rec["abs_path"]) == digest


def test_copy_false_outside_the_assets_root_is_refused_and_nothing_moves(reg, src):
    from comfyvn.sources import CopyRequiredError

    source = make_file(src, "elsewhere.bin", b"stays where it is")
    with pytest.raises(CopyRequiredError, match="copy=true") as err:
        reg.register_file(source, "models", copy=False)
    assert error_row(err.value).status == 400 and err.value.code == "copy_required"
    assert source.read_bytes() == b"stays where it is" and reg.count() == 0
    assert [p for p in files_under(reg.assets_root)] == []


def test_copy_false_inside_the_assets_root_registers_in_place_and_never_moves(reg):
    from comfyvn.sources import CopyRequiredError

    placed = make_file(reg.assets_root, "art/hero.bin", b"already here")
    inode = placed.stat().st_ino
    with pytest.raises(CopyRequiredError, match="dest_relative"):  # would be a move inside the root
        reg.register_file(placed, "models", copy=False, dest_relative="models/moved.bin")
    rec = reg.register_file(placed, "models", copy=False)
    assert rec["path"] == "art/hero.bin" and placed.stat().st_ino == inode
    assert sorted(p.name for p in (reg.assets_root / "art").iterdir()) == ["hero.bin", "hero.bin.asset.json"]


def test_a_trusted_digest_skips_hashing_but_must_be_well_formed(reg, src, monkeypatch):
    source = make_file(reg.ws.staging_dir, "0123456789ab-staged.bin", b"staged bytes")
    digest = sha(source)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(placemod, "sha256_file", no_hashing)
    rec = reg.register_file(source, "models", copy=False, digest=digest.upper())
    assert rec["hash"] == digest
    copy_of_it = make_file(src, "again.bin", b"staged bytes")
    before = files_under(reg.assets_root)
    monkeypatch.setattr(placemod, "copy_and_hash", no_hashing)  # a known duplicate is not even read
    again = reg.register_file(copy_of_it, "models", digest=digest, tags=["dup"])
    assert again["uid"] == rec["uid"] and again["tags"] == ["dup"] and files_under(reg.assets_root) == before
    with pytest.raises(ValueError, match="64 hexadecimal"):
        reg.register_file(make_file(src, "x.bin", b"x"), "models", digest="abc")


def test_the_same_bytes_register_separately_per_project(ws, src):
    source = make_file(src, "shared.png.txt", "same bytes")
    a = AssetRegistry("alpha").register_file(source, "docs")
    b = AssetRegistry("beta").register_file(source, "docs")
    assert a["uid"] == b["uid"]
    assert a["abs_path"] != b["abs_path"] and Path(a["abs_path"]).is_file() and Path(b["abs_path"]).is_file()
    assert AssetRegistry("alpha").count() == 1 and AssetRegistry("beta").count() == 1


def test_same_bytes_again_return_the_same_uid_merge_and_copy_nothing(reg, src):
    first = reg.register_file(make_file(src, "hero.txt", "hero"), "docs", tags=["hero"],
                              metadata={"author": "ann", "nested": {"a": 1}}, license_tag="cc0")
    files_before = files_under(reg.assets_root)
    rec = Recorder(reg)
    again = reg.register_file(make_file(src, "other-name.txt", "hero"), "docs", tags=["Portrait", "hero"],
                              metadata={"nested": {"b": 2}, "title": "Hero"})
    assert again["uid"] == first["uid"]
    assert again["path"] == first["path"]
    assert again["tags"] == ["hero", "portrait"]
    assert free(again["meta"]) == {"author": "ann", "nested": {"a": 1, "b": 2}, "title": "Hero"}
    assert again["meta"]["tags"] == ["hero", "portrait"] and again["meta"]["license"] == "cc0"
    assert again["license"] == "cc0"  # not given again: kept
    assert again["version"] == first["version"] + 1
    assert files_under(reg.assets_root) == files_before  # nothing copied, no temp file left
    assert rec.events() == [AssetRegistry.HOOK_ASSET_META_UPDATED, AssetRegistry.HOOK_SIDECAR_WRITTEN]
    assert reg.read_sidecar(first["uid"])["tags"] == ["hero", "portrait"]
    same = reg.register_file(make_file(src, "third.txt", "hero"), "docs")  # nothing new to merge
    assert same["version"] == again["version"]
    assert reg.count() == 1


def test_register_files_is_one_group_commit_and_reports_each_item(reg, src):
    make_file(reg.assets_root / "docs", "taken.txt", "somebody else's")
    twin_a, twin_b = make_file(src, "twin_a.txt", "same bytes"), make_file(src, "twin_b.txt", "same bytes")
    items = [
        {"source_path": make_file(src, "one.txt", "one"), "asset_type": "docs", "tags": ["a"]},
        {"source_path": src / "missing.txt", "asset_type": "docs"},
        {"source_path": make_file(src, "taken.txt", "mine"), "asset_type": "docs"},
        {"source_path": twin_a, "asset_type": "docs", "tags": ["first"]},
        {"source_path": twin_b, "asset_type": "docs", "tags": ["second"]},  # same bytes, same batch
        {"source_path": make_file(src, "two.txt", "two"), "asset_type": "BAD TYPE"},
    ]
    committed: list[int] = []
    out = reg.register_files(items, on_commit=lambda conn, index, record: committed.append(index))
    assert out[0]["path"] == "docs/one.txt" and out[0]["tags"] == ["a"]
    assert isinstance(out[1], FileNotFoundError) and isinstance(out[2], AssetCollisionError)
    assert isinstance(out[5], ValueError)
    assert out[3]["uid"] == out[4]["uid"] and sorted(out[4]["tags"]) == ["first", "second"]  # merged
    assert committed == [0, 3]  # on_commit runs for rows inserted by this call only
    assert reg.count() == 2 and reg.pending_recovery() == []
    assert reg.db.query("SELECT * FROM file_intents") == []
    assert sorted(p.name for p in (reg.assets_root / "docs").iterdir()) == [
        "one.txt", "one.txt.asset.json", "taken.txt", "twin_a.txt", "twin_a.txt.asset.json"]
    assert not (reg.assets_root / ".incoming").exists() or list((reg.assets_root / ".incoming").iterdir()) == []


class Interrupted(BaseException):
    """Not an Exception: escapes the per-item savepoint like a KeyboardInterrupt would."""


def test_a_group_commit_that_fails_as_a_whole_leaves_nothing_behind(reg, src):
    sources = [make_file(reg.ws.staging_dir, f"0123456789a{i}-s{i}.txt", f"bytes {i}") for i in range(3)]

    def interrupt_on_last(conn, index, record):
        if index == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        reg.register_files([{"source_path": p, "asset_type": "docs", "copy": False} for p in sources],
                           on_commit=interrupt_on_last)
    assert reg.count() == 0 and reg.db.query("SELECT * FROM file_intents") == []
    assert [p.read_text() for p in sources] == ["bytes 0", "bytes 1", "bytes 2"]  # moved back
    assert [p for p in files_under(reg.assets_root)] == []  # no file, no sidecar, no temp file


def test_original_file_name_is_kept(reg, src):
    rec = reg.register_file(make_file(src, "Hero Portrait (final) v2.txt", "x"), "docs")
    assert rec["path"] == "docs/Hero Portrait (final) v2.txt"
    rec2 = reg.register_file(make_file(src, "Zoë.txt", "y"), "docs", dest_relative="characters/zoe/")
    assert rec2["path"] == "characters/zoe/Zoë.txt"
    rec3 = reg.register_file(make_file(src, "raw.txt", "z"), "docs", dest_relative="lore/renamed.txt")
    assert rec3["path"] == "lore/renamed.txt"


@pytest.mark.parametrize("dest", ["/etc/passwd", "../outside.txt", "a/../../outside.txt", "..", "C:\\temp\\x.txt",
                                  "a/b/../../../x.txt", "", "x.txt.asset.json"])
def test_unsafe_dest_relative_is_refused(reg, src, dest, tmp_path):
    source = make_file(src, "payload.txt", "payload")
    with pytest.raises(UnsafePathError) as err:
        reg.register_file(source, "docs", dest_relative=dest)
    assert "dest_relative" in str(err.value)
    assert reg.count() == 0
    assert [p for p in files_under(reg.assets_root) if p.name != ".keep"] == []
    assert not (tmp_path / "outside.txt").exists()


def test_symlink_escapes_are_refused(reg, src, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (reg.assets_root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="escapes"):
        reg.register_file(make_file(src, "p.txt", "p"), "docs", dest_relative="link/p.txt")
    (reg.assets_root / "docs").mkdir()
    (reg.assets_root / "docs" / "evil.txt").symlink_to(outside / "target.txt")
    with pytest.raises(UnsafePathError):
        reg.register_file(make_file(src, "evil.txt", "e"), "docs")
    assert list(outside.iterdir()) == [] and reg.count() == 0


def test_a_different_file_at_the_destination_is_never_overwritten(reg, src):
    placed = make_file(reg.assets_root, "docs/notes.txt", "someone else's notes")
    with pytest.raises(AssetCollisionError, match="docs/notes.txt"):
        reg.register_file(make_file(src, "notes.txt", "my notes"), "docs")
    assert placed.read_text() == "someone else's notes"
    first = reg.register_file(make_file(src, "a/logo.txt", "logo one"), "docs")
    with pytest.raises(AssetCollisionError):
        reg.register_file(make_file(src, "b/logo.txt", "logo two"), "docs")
    assert Path(first["abs_path"]).read_text() == "logo one"
    assert reg.count() == 1
    moved = make_file(reg.ws.staging_dir, "0123456789ab-logo.txt", "logo three")
    with pytest.raises(AssetCollisionError):
        reg.register_file(moved, "docs", copy=False, dest_relative="docs/logo.txt")
    assert moved.read_text() == "logo three"  # a refused move leaves the source where it was
    assert not any((reg.assets_root / ".incoming").glob("*"))  # no copy left half-way


def test_an_identical_unregistered_file_at_the_destination_is_adopted(reg, src):
    placed = make_file(reg.assets_root, "docs/same.txt", "identical")
    rec = reg.register_file(make_file(src, "same.txt", "identical"), "docs")
    assert rec["path"] == "docs/same.txt" and Path(rec["abs_path"]).read_text() == "identical"
    assert placed.exists()


def test_registering_a_file_in_place(reg):
    placed = make_file(reg.assets_root, "docs/inplace.txt", "here already")
    rec = reg.register_file(placed, "docs", dest_relative="docs/inplace.txt", copy=False)
    assert rec["path"] == "docs/inplace.txt" and placed.read_text() == "here already"


def test_bad_inputs_are_clear_errors(reg, src):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reg.register_file(src / "missing.png", "sprites")
    with pytest.raises(IngestError, match="not a regular file") as err:
        reg.register_file(src, "sprites")  # a folder
    assert err.value.code == "not_a_file" and error_row(err.value).status == 400
    source = make_file(src, "ok.txt", "ok")
    for bad_type in ("", "Sprites", "a/b", "../x", 3):
        with pytest.raises(ValueError, match="asset_type"):
            reg.register_file(source, bad_type)
    with pytest.raises(ValueError, match="metadata"):
        reg.register_file(source, "docs", metadata=["not", "a", "dict"])
    with pytest.raises(ValueError, match="provenance"):
        reg.register_file(source, "docs", provenance="civitai")
    with pytest.raises(ValueError, match="tags"):
        reg.register_file(source, "docs", tags=["ok", 3])
    assert reg.count() == 0


# ---------------------------------------------------------------------------------- sidecars
def test_sidecar_has_every_field_and_matches_the_database(reg, src):
    prov = {"source": "https://civitai.com/models/1?modelVersionId=2", "provider": "civitai",
            "terms_acknowledged": True, "provider_metadata": {"modelId": 1, "creator": "someone"}}
    rec = reg.register_file(make_file(src, "lora.safetensors", os.urandom(1000)), "loras", tags="style, Anime",
                            metadata={"trigger": "xyz"}, license_tag="cc-by-4.0", provenance=prov, origin="civitai")
    sidecar = Path(rec["sidecar"])
    assert sidecar == Path(rec["abs_path"] + ".asset.json")
    doc = json.loads(sidecar.read_text())
    assert set(doc) == SIDECAR_KEYS
    assert doc["uid"] == rec["uid"] and doc["type"] == "loras" and doc["path"] == "loras/lora.safetensors"
    assert doc["hash"] == rec["hash"] and doc["bytes"] == 1000
    assert doc["tags"] == ["style", "anime"] and doc["license"] == "cc-by-4.0" and doc["origin"] == "civitai"
    assert doc["version"] == 1 and free(doc["meta"]) == {"trigger": "xyz"}
    assert {k: doc["meta"][k] for k in ("tags", "license", "origin", "version")} == {
        "tags": ["style", "anime"], "license": "cc-by-4.0", "origin": "civitai", "version": 1}
    assert doc["created_at"].endswith("Z")
    assert doc["preview"] == {"kind": None}
    for key, value in prov.items():
        assert doc["provenance"][key] == value
        assert rec["provenance"][key] == value
        assert reg.get_asset(rec["uid"])["provenance"][key] == value
    assert doc["provenance"]["digest"] == rec["hash"]
    assert doc == reg.sidecar_document(reg.get_asset(rec["uid"]))
    assert reg.read_sidecar(rec["uid"]) == doc
    assert [p.name for p in sidecar.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_default_provenance_records_the_local_source(reg, src):
    source = make_file(src, "local.txt", "local")
    rec = reg.register_file(source, "docs")
    assert rec["provenance"] == {"source": str(source.resolve()), "provider": "local", "digest": rec["hash"],
                                 "terms_acknowledged": False, "provider_metadata": {}}
    assert rec["origin"] == "local"


def test_read_sidecar_names_a_corrupt_or_missing_file(reg, src):
    rec = reg.register_file(make_file(src, "c.txt", "c"), "docs")
    Path(rec["sidecar"]).write_text("{not json")
    with pytest.raises(AssetRegistryError, match="not valid JSON") as err:
        reg.read_sidecar(rec["uid"])
    assert rec["sidecar"] in str(err.value)
    Path(rec["sidecar"]).unlink()
    with pytest.raises(AssetRegistryError, match="missing"):
        reg.read_sidecar(rec["uid"])
    reg.rewrite_sidecar(rec["uid"])
    assert reg.read_sidecar(rec["uid"]) == reg.sidecar_document(reg.get_asset(rec["uid"]))


# ---------------------------------------------------------------------------------- thumbnails
def test_image_thumbnails_256_and_512_made_off_the_callers_thread(reg, src, monkeypatch):
    threads = []
    real = thumbmod.render_image_thumbnail

    def spy(path, size, **kwargs):
        threads.append(threading.current_thread())
        return real(path, size, **kwargs)

    monkeypatch.setattr(thumbmod, "render_image_thumbnail", spy)
    rec = reg.register_file(make_png(src, "wide.png", (1200, 600)), "backgrounds")
    assert rec["preview"]["kind"] == "image" and set(rec["preview"]["thumbnails"]) == {"256", "512"}
    assert reg.wait_for_thumbnails(30)
    assert threads and all(t is not threading.main_thread() for t in threads)
    for size in (256, 512):
        path = reg.resolve_thumbnail_path(rec["uid"], size)
        assert path is not None and path.is_file()
        with Image.open(path) as im:
            assert max(im.size) == size and im.size == (size, size // 2)
    assert reg.resolve_thumbnail_path(rec["uid"]) == reg.resolve_thumbnail_path(rec["uid"], "256")
    assert {s["status"] for s in reg.thumbnail_status(rec["uid"]).values()} == {"ready"}


def test_wav_gets_a_waveform(reg, src):
    rec = reg.register_file(make_wav(src, "voice.wav"), "audio")
    assert rec["preview"]["kind"] == "audio"
    assert reg.wait_for_thumbnails(30)
    path = reg.resolve_thumbnail_path(rec["uid"], "waveform")
    data = json.loads(path.read_text())
    assert data["sample_rate"] == 8000 and data["channels"] == 1 and data["duration_s"] == 1.0
    assert 0 < max(data["peaks"]) <= 1 and len(data["peaks"]) > 100
    assert reg.resolve_thumbnail_path(rec["uid"], 256) is None


def test_a_failed_thumbnail_is_recorded_and_not_listed_as_present(reg, src):
    rec = reg.register_file(make_file(src, "broken.png", b"\x89PNG but not really"), "sprites")
    assert reg.wait_for_thumbnails(30)
    status = reg.thumbnail_status(rec["uid"])
    assert set(status) == {"256", "512"}
    assert all(s["status"] == "failed" and s["error"] for s in status.values())
    assert reg.resolve_thumbnail_path(rec["uid"]) is None
    assert not Path(status["256"]["path"]).exists()


def test_files_without_previews_have_no_thumbnails(reg, src):
    rec = reg.register_file(make_file(src, "m.bin", b"\0" * 10), "models")
    assert reg.thumbnail_status(rec["uid"]) == {}
    assert reg.resolve_thumbnail_path(rec["uid"]) is None


# ---------------------------------------------------------------------------------- hooks
def test_hook_payloads_are_exactly_the_seed_fields(reg, src):
    rec = Recorder(reg)
    a = reg.register_file(make_file(src, "h.txt", "h"), "docs", metadata={"k": "v"})
    reg.update_asset_meta(a["uid"], {"k2": 1})
    reg.remove_asset(a["uid"])
    assert rec.events() == ["asset_registered", "asset_sidecar_written", "asset_meta_updated",
                            "asset_sidecar_written", "asset_removed"]
    for event, payload in rec.calls:
        assert set(payload) == SEED_PAYLOADS[event], event
        assert payload["uid"] == a["uid"] and payload["type"] == "docs"
    registered, written, updated, _, removed = (p for _, p in rec.calls)
    assert registered["path"] == a["abs_path"] and free(registered["meta"]) == {"k": "v"}
    assert registered["sidecar"] == a["sidecar"]
    assert written["rel_path"] == "docs/h.txt" and written["sidecar"] == a["sidecar"]
    assert free(updated["meta"]) == {"k": "v", "k2": 1} and updated["sidecar"] == a["sidecar"]
    assert updated["meta"]["version"] == 2 and updated["meta"]["tags"] == []
    assert removed["path"] == a["abs_path"] and removed["sidecar"] == a["sidecar"]
    assert all(t == threading.current_thread().name for t in rec.threads)  # synchronous, in the caller


def test_registered_hook_sees_the_sidecar_already_written(reg, src):
    seen = []
    reg.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, lambda p: seen.append(json.loads(Path(p["sidecar"]).read_text())))
    rec = reg.register_file(make_file(src, "s.txt", "s"), "docs")
    assert seen and seen[0]["uid"] == rec["uid"]


def test_modder_envelopes_mirror_the_hooks(reg, src):
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    a = reg.register_file(make_file(src, "m.txt", "m"), "docs", tags=["x"])
    reg.bulk_update_tags([a["uid"]], add_tags=["y"], license_tag="cc0")
    reg.remove_asset(a["uid"])
    events = bus.events_after(start)
    assert [e["event"] for e in events] == ["on_asset_registered", "on_asset_saved", "on_asset_sidecar_written",
                                            "on_asset_meta_updated", "on_asset_sidecar_written", "on_asset_removed"]
    hook_events = ["asset_registered", "asset_registered", "asset_sidecar_written", "asset_meta_updated",
                   "asset_sidecar_written", "asset_removed"]
    for env, hook_event in zip(events, hook_events, strict=True):
        data = env["data"]
        assert data["hook_event"] == hook_event and data["timestamp_utc"].endswith("Z")
        assert data["timestamp"] == env["ts"]  # epoch seconds, the original's
        assert SEED_PAYLOADS[hook_event] <= set(data) and data["project_id"] == "modding"
    updated = events[3]["data"]
    assert updated["tags"] == ["x", "y"] and updated["license"] == "cc0"
    assert events[5]["data"]["sidecar"] == a["sidecar"]


def test_a_listener_on_one_instance_sees_changes_made_through_another(ws, src):
    one, two, other_project = AssetRegistry("shared"), AssetRegistry("shared"), AssetRegistry("else")
    rec = Recorder(one)
    two.register_file(make_file(src, "via-two.txt", "two"), "docs")
    other_project.register_file(make_file(src, "elsewhere.txt", "else"), "docs")
    assert rec.events() == ["asset_registered", "asset_sidecar_written"]
    assert two.iter_hooks() == one.iter_hooks() and all(len(cbs) == 1 for cbs in one.iter_hooks().values())
    assert other_project.iter_hooks() == {e: () for e in AssetRegistry.HOOK_EVENTS}
    rec.detach()
    assert one.iter_hooks() == {e: () for e in AssetRegistry.HOOK_EVENTS}


def test_add_remove_iter_hooks(reg, src):
    def cb(payload):
        pass

    reg.add_hook(AssetRegistry.HOOK_SIDECAR_WRITTEN, cb)
    assert reg.iter_hooks(AssetRegistry.HOOK_SIDECAR_WRITTEN) == {AssetRegistry.HOOK_SIDECAR_WRITTEN: (cb,)}
    assert any(name.endswith("cb") for name in reg.describe_hooks()[AssetRegistry.HOOK_SIDECAR_WRITTEN])
    assert reg.remove_hook(AssetRegistry.HOOK_SIDECAR_WRITTEN, cb) is True
    assert reg.remove_hook(AssetRegistry.HOOK_SIDECAR_WRITTEN, cb) is False
    with pytest.raises(ValueError, match="unknown registry hook 'asset_exploded'"):
        reg.add_hook("asset_exploded", cb)
    with pytest.raises(TypeError):
        reg.add_hook(AssetRegistry.HOOK_ASSET_REMOVED, "not callable")


def test_a_failing_hook_does_not_undo_the_change(reg, src):
    def broken(payload):
        raise RuntimeError("listener bug")

    reg.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, broken)
    rec = reg.register_file(make_file(src, "f.txt", "f"), "docs")
    assert reg.get_asset(rec["uid"]) is not None
    reg.remove_hook(AssetRegistry.HOOK_ASSET_REGISTERED, broken)


def test_a_failure_half_way_leaves_no_row_event_file_or_sidecar(reg, src, monkeypatch):
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    def disk_full(path, payload, fsync=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sidecarmod, "atomic_write_json", disk_full)
    for copy in (True, False):  # a copy from anywhere, a move of a hand-off (staged) file
        source = make_file(src if copy else reg.ws.staging_dir, "half.txt" if copy else "0123456789ab-half.txt",
                           "half")
        with pytest.raises(OSError, match="No space"):
            reg.register_file(source, "docs", copy=copy)
        assert source.read_text() == "half"  # a move is put back
        assert reg.count() == 0 and bus.events_after(start) == []
        assert files_under(reg.assets_root) == []
        assert reg.db.query_one("SELECT COUNT(*) FROM file_intents")[0] == 0


# ---------------------------------------------------------------------------------- queries
@pytest.fixture
def catalog(reg, src):
    specs = [("sprites", ["hero", "red"], "cc0"), ("sprites", ["hero", "blue"], "cc-by-4.0"),
             ("sprites", ["villain", "red"], "cc0"), ("audio", ["hero"], "cc0"),
             ("audio", ["ambient"], None), ("models", ["hero", "red", "big"], "cc-by-sa-4.0")]
    recs = []
    for i, (kind, tags, lic) in enumerate(specs):
        recs.append(reg.register_file(make_file(src, f"{kind}_{i}.bin", f"asset {i}"), kind, tags=tags,
                                      license_tag=lic, metadata={"title": f"Item number {i}"}))
    return recs


def test_list_assets_filters(reg, catalog):
    uids = lambda items: {r["uid"] for r in items}  # noqa: E731
    assert uids(reg.list_assets("sprites")) == uids(catalog[:3])
    assert uids(reg.list_assets(tags=["hero", "red"])) == {catalog[0]["uid"], catalog[5]["uid"]}
    assert uids(reg.list_assets(tags=["blue", "villain"], tags_mode="any")) == {catalog[1]["uid"], catalog[2]["uid"]}
    assert uids(reg.list_assets("sprites", tags=["red"], license="cc0")) == {catalog[0]["uid"], catalog[2]["uid"]}
    assert uids(reg.list_assets(license="")) == {catalog[4]["uid"]}  # "" = no licence
    assert uids(reg.list_assets(text="NUMBER 3")) == {catalog[3]["uid"]}
    assert uids(reg.list_assets(text="100%")) == set()
    assert uids(reg.list_assets(hash=catalog[2]["hash"].upper())) == {catalog[2]["uid"]}
    assert reg.list_assets("nothing-of-this-type") == []
    page = reg.query_assets(asset_type="sprites", with_total=True, limit=2)
    assert page["total"] == 3 and len(page["items"]) == 2 and page["next_cursor"]


def test_cursor_pages_cover_everything_once_in_order(reg, catalog):
    for sort, desc in (("created_at", True), ("path", False), ("bytes", True), ("uid", False)):
        seen, cursor = [], None
        while True:
            page = reg.query_assets(limit=4, cursor=cursor, sort=sort, descending=desc)
            seen.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == len(catalog) and len({r["uid"] for r in seen}) == len(catalog)
        keys = [(r[sort], r["uid"]) for r in seen]
        assert keys == sorted(keys, reverse=desc), sort
    by_path = reg.list_assets(sort="path", descending=False, limit=50)
    assert [r["path"] for r in by_path] == sorted(r["path"] for r in catalog)
    assert [r["uid"] for r in reg.list_assets(sort="path", descending=False, limit=2, offset=2)] == \
        [r["uid"] for r in by_path[2:4]]


def test_query_arguments_are_checked(reg, catalog):
    with pytest.raises(ValueError, match="sort"):
        reg.list_assets(sort="size; DROP TABLE assets")
    with pytest.raises(ValueError, match="cursor"):
        reg.list_assets(cursor="garbage!")
    with pytest.raises(ValueError, match="tags_mode"):
        reg.list_assets(tags=["x"], tags_mode="some")
    with pytest.raises(ValueError, match="limit"):
        reg.list_assets(limit=0)


def test_filtered_listing_uses_indexes(reg, catalog):
    statements = []
    reg.db.conn.set_trace_callback(statements.append)
    try:
        reg.list_assets("sprites", tags=["red"], license="cc0", limit=50)
        reg.list_assets(tags=["hero"], limit=50)
        reg.list_assets(license="cc0", limit=50)
        reg.list_assets(hash=catalog[0]["hash"])
    finally:
        reg.db.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT A.*")]
    assert len(selects) == 4
    for sql in selects:
        plan = [r[3] for r in reg.db.query("EXPLAIN QUERY PLAN " + sql)]
        full_scans = [p for p in plan if p.startswith("SCAN") and "INDEX" not in p and p != "SCAN p"]
        assert not full_scans, (sql, plan)  # "SCAN p": a tag-ordered page's own uids (registry.007_tag_copies)


def test_get_find_count_facets_dataframe(reg, catalog):
    assert reg.get_asset(catalog[0]["uid"])["path"] == catalog[0]["path"]
    assert reg.get_asset("0000000000000000") is None
    assert reg.find_by_hash(catalog[1]["hash"])["uid"] == catalog[1]["uid"]
    assert reg.count() == 6
    facets = reg.facets()
    assert dict(facets["types"]) == {"audio": 2, "models": 1, "sprites": 3}
    assert dict(facets["tags"])["hero"] == 4
    assert dict(facets["licenses"])["cc0"] == 3
    frame = reg.to_dataframe()
    assert len(frame) == 6 and {"uid", "type", "tags", "license", "meta", "provenance"} <= set(frame.columns)
    assert str(frame["created_at"].dtype).startswith("datetime64")
    assert set(reg.to_dataframe(asset_type="audio")["uid"]) == {catalog[3]["uid"], catalog[4]["uid"]}
    assert [r["uid"] for r in reg.iter_assets(batch=2)] == [r["uid"] for r in
                                                            sorted(catalog, key=lambda r: r["path"])]


# ---------------------------------------------------------------------------------- updates
def test_update_asset_meta_merges_and_keeps_preview_and_thumbnails(reg, src):
    rec = reg.register_file(make_png(src, "keep.png"), "sprites", metadata={"a": {"x": 1}, "b": 2})
    assert reg.wait_for_thumbnails(30)
    thumb = reg.resolve_thumbnail_path(rec["uid"])
    updated = reg.update_asset_meta(rec["uid"], {"a": {"y": 2}, "c": 3}, add_tags=["new"], license_tag="cc0")
    assert free(updated["meta"]) == {"a": {"x": 1, "y": 2}, "b": 2, "c": 3}
    assert updated["preview"] == rec["preview"] and updated["version"] == 2
    assert reg.resolve_thumbnail_path(rec["uid"]) == thumb and thumb.is_file()
    side = reg.read_sidecar(rec["uid"])
    assert side["meta"] == updated["meta"] and side["preview"] == rec["preview"] and side["version"] == 2
    replaced = reg.update_asset_meta(rec["uid"], {"only": True}, replace=True, remove_tags=["new"])
    assert free(replaced["meta"]) == {"only": True} and replaced["tags"] == [] and replaced["license"] == "cc0"
    cleared = reg.update_asset_meta(rec["uid"], license_tag=None)
    assert cleared["license"] is None and reg.read_sidecar(rec["uid"])["license"] is None


def test_update_is_conditional_on_version_when_asked(reg, src):
    rec = reg.register_file(make_file(src, "v.txt", "v"), "docs")
    reg.update_asset_meta(rec["uid"], {"first": 1}, expected_version=1)
    with pytest.raises(AssetRegistryError, match="changed meanwhile"):
        reg.update_asset_meta(rec["uid"], {"stale": 1}, expected_version=1)
    assert "stale" not in reg.get_asset(rec["uid"])["meta"]


def test_update_of_an_unknown_asset(reg):
    with pytest.raises(AssetNotFoundError, match="no asset|unknown asset"):
        reg.update_asset_meta("ffffffffffffffff", {"a": 1})
    with pytest.raises(ValueError, match="metadata"):
        reg.update_asset_meta("ffffffffffffffff", "text")


def test_bulk_update_tags_changes_all_or_nothing(reg, catalog):
    uids = [r["uid"] for r in catalog[:3]]
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    with pytest.raises(AssetNotFoundError, match="ffffffffffffffff"):
        reg.bulk_update_tags(uids + ["ffffffffffffffff"], add_tags=["approved"])
    assert all("approved" not in reg.get_asset(u)["tags"] for u in uids)
    assert bus.events_after(start) == []
    result = reg.bulk_update_tags(uids, add_tags=["approved", "Red"], remove_tags=["hero"], license_tag="cc0")
    assert [r["uid"] for r in result] == uids
    for uid in uids:
        asset = reg.get_asset(uid)
        assert "approved" in asset["tags"] and "hero" not in asset["tags"] and asset["license"] == "cc0"
        assert reg.read_sidecar(uid)["tags"] == asset["tags"]
    assert {r["uid"] for r in reg.list_assets(tags=["approved"])} == set(uids)
    assert not reg.list_assets(tags=["hero"], asset_type="sprites")
    reg.bulk_update_tags(uids[:1], license_tag=None)
    assert reg.get_asset(uids[0])["license"] is None
    reg.bulk_update_tags(uids[1:2])  # no licence argument: unchanged
    assert reg.get_asset(uids[1])["license"] == "cc0"


def test_bulk_update_is_one_transaction(reg, catalog, monkeypatch):
    uids = [r["uid"] for r in catalog]
    calls = {"n": 0}
    real = Records.search_text

    def fail_on_fourth(rec):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("crash in the middle of the batch")
        return real(rec)

    monkeypatch.setattr(Records, "search_text", staticmethod(fail_on_fourth))
    versions = {u: reg.get_asset(u)["version"] for u in uids}
    with pytest.raises(RuntimeError):
        reg.bulk_update_tags(uids, add_tags=["batch"])
    assert {u: reg.get_asset(u)["version"] for u in uids} == versions
    assert not reg.list_assets(tags=["batch"])


# ---------------------------------------------------------------------------------- removal
def test_remove_asset_moves_files_to_trash_and_drops_everything_else(ws, reg, src):
    rec = reg.register_file(make_png(src, "gone.png"), "sprites", tags=["x"], provenance={"provider": "civitai"})
    assert reg.wait_for_thumbnails(30)
    thumbs = [reg.resolve_thumbnail_path(rec["uid"], s) for s in (256, 512)]
    recorder = Recorder(reg)
    out = reg.remove_asset_record(rec["uid"])
    trash = Path(out["trashed_to"])
    assert trash.parent == ws.trash_dir / "modding"
    assert sha(trash / "gone.png") == rec["hash"] and json.loads((trash / "gone.png.asset.json").read_text())["uid"] \
        == rec["uid"]
    assert not Path(rec["abs_path"]).exists() and not Path(rec["sidecar"]).exists()
    assert all(not t.exists() for t in thumbs)
    assert reg.get_asset(rec["uid"]) is None and reg.find_by_hash(rec["hash"]) is None
    assert reg.thumbnail_status(rec["uid"]) == {} and reg.list_assets(tags=["x"]) == []
    assert reg.db.query_one("SELECT COUNT(*) FROM asset_tags WHERE uid = ?", (rec["uid"],))[0] == 0
    assert recorder.events() == ["asset_removed"]
    with pytest.raises(AssetNotFoundError):
        reg.remove_asset_record(rec["uid"])
    assert reg.remove_asset(rec["uid"]) is False  # the original's call: False for an unknown uid
    again = reg.register_file(make_png(src, "gone.png"), "sprites")  # can come back later
    assert again["uid"] == rec["uid"] and again["version"] == 1 and again["tags"] == []


def test_remove_asset_with_delete_files(ws, reg, src):
    rec = reg.register_file(make_wav(src, "bye.wav"), "audio")
    assert reg.wait_for_thumbnails(30)
    out = reg.remove_asset_record(rec["uid"], delete_files=True)
    assert out["trashed_to"] is None
    assert not Path(rec["abs_path"]).exists() and not Path(rec["sidecar"]).exists()
    assert not ws.trash_dir.exists() or not any(ws.trash_dir.rglob("bye.wav"))
    assert files_under(reg.thumbnails_root) == []


def test_recover_sweeps_a_dead_writers_temporary_sidecar_and_rewrites_it(ws, src, subprocess_env):
    import subprocess
    import sys

    reg = AssetRegistry(project_id="sweep", ws=ws)
    rec = reg.register_file(make_file(src, "note.txt", "hello"), "docs")
    sidecar = Path(rec["sidecar"])
    # a process that died while writing the sidecar: its temporary file, and the row still pending
    code = ("import os, sys; from comfyvn.fsutil import open_temp; "
            "fd, p = open_temp(sys.argv[1], sys.argv[2]); os.write(fd, b'{\"half'); print(p)")
    out = subprocess.run([sys.executable, "-c", code, str(sidecar.parent), f".{sidecar.name}"], env=subprocess_env,
                         capture_output=True, text=True, check=True)
    leftover = Path(out.stdout.strip())
    assert leftover.exists()
    sidecar.unlink()
    with reg.db.transaction() as conn:
        conn.execute("UPDATE assets SET sidecar_pending = 1 WHERE project_id = ? AND uid = ?", ("sweep", rec["uid"]))
    stats = reg.recover()
    assert not leftover.exists()
    assert stats["temp_files"] >= 1 and stats["sidecars"] == 1
    assert json.loads(sidecar.read_text())["uid"] == rec["uid"]


def test_a_sidecar_or_thumbnail_swapped_for_a_symlink_is_never_followed(reg, src, tmp_path):
    from comfyvn.confined import RefusedFileError

    rec = reg.register_file(make_png(src, "p.png"), "sprites")
    assert reg.wait_for_thumbnails(30)
    outside = make_file(tmp_path / "outside", "secret.json", '{"secret": "do not read"}')
    sidecar = Path(rec["sidecar"])
    sidecar.unlink()
    sidecar.symlink_to(outside)
    with pytest.raises(RefusedFileError):
        reg.read_sidecar(rec["uid"])
    thumb = reg.resolve_thumbnail_path(rec["uid"], 256)
    assert thumb is not None
    thumb.unlink()
    thumb.symlink_to(outside)
    assert reg.resolve_thumbnail_path(rec["uid"], 256) is None


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], 2**70, True, b"x"])
def test_cursors_of_another_shape_are_a_value_error(value):
    import base64
    import json

    from comfyvn.studio.core.asset_registry import decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor("2026", "ab")) == ("2026", "ab")
    forged = base64.urlsafe_b64encode(json.dumps([value, "ab"], default=str).encode()).decode()
    if isinstance(value, bytes):
        forged = "!!not base64!!"
    with pytest.raises(ValueError, match="invalid cursor"):
        decode_cursor(forged)


# ------------------------------------------------------------------------ queries at scale (issue 19)
@pytest.fixture
def skewed(reg, src):
    """30 assets: "common" on all, "rare" on three, two types and two licences, distinct created_at."""
    recs = []
    for i in range(30):
        tags = ["common"] + (["rare"] if i in (3, 14, 27) else []) + (["even"] if i % 2 == 0 else [])
        recs.append(reg.register_file(make_file(src, f"s{i}.bin", f"skewed {i}"), ("sprites", "audio")[i % 3 == 0],
                                      tags=tags, license_tag=("cc0", "mit")[i % 4 == 0], created_at=1000.0 + i))
    return recs


def expected(recs: list[dict], *, kind=None, tags=(), lic=None) -> list[str]:
    hits = [r for r in recs if (kind is None or r["type"] == kind) and set(tags) <= set(r["tags"])
            and (lic is None or r["license"] == lic)]
    return [r["uid"] for r in sorted(hits, key=lambda r: (r["created_at"], r["uid"]), reverse=True)]


def plans_of(reg, fn) -> list[list[str]]:
    """SQLite's EXPLAIN QUERY PLAN of each page query ``fn`` ran."""
    with traced(reg.db) as statements:
        fn()
    return [[r[3] for r in reg.db.query("EXPLAIN QUERY PLAN " + s)] for s in statements
            if s.lstrip().upper().startswith(("SELECT A.*", "SELECT A.UID"))]


@pytest.mark.parametrize(("kind", "tags", "lic"), [
    ("sprites", ["rare"], "cc0"), (None, ["rare"], None), ("audio", ["common"], "mit"), (None, ["common"], None),
    ("sprites", ["common", "rare"], None), (None, ["even", "common"], "cc0"), ("audio", ["nothing"], None),
])
def test_a_rare_tag_drives_the_query_and_pages_match_the_walk(reg, skewed, monkeypatch, kind, tags, lic):
    import comfyvn.registry.records as recmod

    monkeypatch.setattr(recmod, "PAGE_DRIVE_MAX", 5)  # "rare" (3 assets) drives; "common" (30) walks
    monkeypatch.setattr(recmod, "PROBE_CAP", 8)
    want = expected(skewed, kind=kind, tags=tags, lic=lic)
    seen, cursor = [], None
    while True:
        page = reg.query_assets(asset_type=kind, tags=tags, license=lic, limit=2, cursor=cursor, with_total=True)
        assert page["total"] == len(want)
        seen += [r["uid"] for r in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == want
    assert Records.of(reg).matching_uids(asset_type=kind, tags=tags, license=lic) == want
    with traced(reg.db) as statements:
        reg.query_assets(asset_type=kind, tags=tags, license=lic, limit=2)
    probes = [s for s in statements if s.startswith("SELECT COUNT(*) FROM (SELECT 1 FROM asset_tags t")]
    # one tag: its rows in asset_tags are the page, in order (no probe); several on SQLite: the
    # rarest drives (probed); PostgreSQL plans them from its statistics: no probe
    assert bool(probes) == (reg.db.engine == "sqlite" and len(tags) > 1)


@pytest.mark.parametrize(("kind", "tags", "lic"), [
    ("sprites", ["rare"], "cc0"), (None, ["rare"], None), ("audio", ["common"], "mit"), (None, ["common"], None),
    ("sprites", ["common", "rare"], None), ("audio", ["nothing"], None),
])
def test_sqlite_plans_a_rare_tag_from_asset_tags_and_a_common_one_by_index_walk(reg, skewed, monkeypatch, kind, tags,
                                                                              lic):
    import comfyvn.registry.records as recmod

    monkeypatch.setattr(recmod, "PAGE_DRIVE_MAX", 5)
    monkeypatch.setattr(recmod, "PROBE_CAP", 8)
    for plan in plans_of(reg, lambda: reg.query_assets(asset_type=kind, tags=tags, license=lic, limit=2)):
        if len(tags) == 1:  # one range of a tag's rows (with their type, licence, created_at copies), in order
            index = "asset_tags_type_license_created" if kind and lic else "asset_tags_created"
            assert plan[:3] == ["MATERIALIZE p", f"SEARCH a USING COVERING INDEX {index} (project_id=? AND tag=?"
                                + (" AND type=? AND license=?)" if kind and lic else ")"), "SCAN p"], plan
            continue
        driven = any(p.startswith("SEARCH d USING COVERING INDEX asset_tags_created (project_id=? AND tag=?)")
                     for p in plan)
        assert driven == ("rare" in tags or "nothing" in tags), plan
        assert not [p for p in plan if p.startswith("SCAN")], plan


def test_a_count_by_tag_reads_the_tag_not_every_asset(reg, skewed):
    with traced(reg.db) as statements:
        assert reg.query_assets(tags=["common"], with_total=True, limit=1)["total"] == 30
        one_tag = [s for s in statements if s.startswith("SELECT COUNT(*) FROM asset_tags t WHERE")]
        statements.clear()
        assert reg.query_assets(asset_type="sprites", tags=["even"], with_total=True, limit=1)["total"] == \
            len(expected(skewed, kind="sprites", tags=["even"]))
        copies = [s for s in statements if s.startswith("SELECT COUNT(*) FROM asset_tags a WHERE")]
    assert len(one_tag) == 1  # the tag's rows in asset_tags' primary key: not one asset read
    # tag + type: the tag's rows with their type copies (registry.007_tag_copies): not one asset read either
    assert len(copies) == 1 and "assets a" not in copies[0], statements


def test_sqlite_counts_a_tag_on_asset_tags_primary_key(reg, skewed):
    with traced(reg.db) as statements:
        reg.query_assets(tags=["common"], with_total=True, limit=1)
        reg.query_assets(asset_type="sprites", tags=["even"], with_total=True, limit=1)
    one_tag = next(s for s in statements if s.startswith("SELECT COUNT(*) FROM asset_tags t WHERE"))
    copies = next(s for s in statements if s.startswith("SELECT COUNT(*) FROM asset_tags a WHERE"))
    assert [r[3] for r in reg.db.query("EXPLAIN QUERY PLAN " + one_tag)] in (
        ["SEARCH t USING COVERING INDEX sqlite_autoindex_asset_tags_1 (project_id=? AND tag=?)"],
        ["SEARCH t USING PRIMARY KEY (project_id=? AND tag=?)"],
        ["SEARCH t USING COVERING INDEX asset_tags_created (project_id=? AND tag=?)"])
    assert [r[3] for r in reg.db.query("EXPLAIN QUERY PLAN " + copies)] == [
        "SEARCH a USING COVERING INDEX asset_tags_type_license_created (project_id=? AND tag=? AND type=?)"]


def test_a_first_page_holding_every_match_is_its_own_total(reg, skewed):
    with traced(reg.db) as statements:
        page = reg.query_assets(tags=["rare"], with_total=True, limit=5)
        capped = Records.of(reg).query_assets(asset_type="audio", with_total=True, limit=50, total_cap=4)
    assert page["total"] == 3 and len(page["items"]) == 3
    assert (capped["total"], capped["total_capped"], len(capped["items"])) == (4, True, 10)
    counted = [s for s in statements if s.startswith("SELECT COUNT(*)")
               and ("FROM assets a" in s or "asset_tags d" in s or "LIMIT" not in s)]
    assert not counted, counted  # only the tag's size probe (capped) ran
    assert reg.query_assets(tags=["rare"], with_total=True, limit=2)["total"] == 3  # a next page: counted


def test_capped_totals(reg, skewed):
    records = Records.of(reg)
    page = records.query_assets(asset_type="sprites", with_total=True, total_cap=5, limit=2)
    assert (page["total"], page["total_capped"]) == (5, True) and len(page["items"]) == 2
    assert records.query_assets(tags=["rare"], with_total=True, total_cap=3)["total_capped"] is False
    exact = records.query_assets(asset_type="sprites", with_total=True, total_cap=1000)
    assert (exact["total"], exact["total_capped"]) == (len(expected(skewed, kind="sprites")), False)
    assert "total_capped" not in records.query_assets(with_total=True)  # the API's exact total is unchanged
    for bad in (0, -1, True, "10", 2.5):
        with pytest.raises(ValueError, match="total_cap"):
            records.query_assets(with_total=True, total_cap=bad)


def test_matching_uids_reads_ids_only_in_one_query(reg, skewed):
    records = Records.of(reg)
    with traced(reg.db) as statements:
        uids = records.matching_uids(asset_type="sprites", license="cc0")
    assert uids == expected(skewed, kind="sprites", lic="cc0")
    assert [s.split(" FROM")[0] for s in statements if s.startswith("SELECT a.")] == ["SELECT a.uid"]
    by_path = records.matching_uids(sort="path", descending=False, tags=["even", "rare"], tags_mode="any")
    assert by_path == [r["uid"] for r in reg.list_assets(sort="path", descending=False, tags=["even", "rare"],
                                                         tags_mode="any")]
    assert records.matching_uids(limit=3) == expected(skewed)[:3]
    assert records.matching_uids(text="skewed 1") == [r["uid"] for r in reg.list_assets(text="skewed 1")]
    with pytest.raises(ValueError, match="limit"):
        records.matching_uids(limit=0)
    with pytest.raises(ValueError, match="sort"):
        records.matching_uids(sort="size; DROP TABLE assets")


def test_keyset_pages_stay_stable_while_assets_are_added(reg, skewed, src):
    first = reg.query_assets(limit=10)
    for i in range(5):  # newer assets and one older than the page boundary arrive between pages
        reg.register_file(make_file(src, f"late{i}.bin", f"late {i}"), "sprites", tags="common",
                          created_at=2000.0 + i if i else 1000.5)
    rest, cursor = [], first["next_cursor"]
    while cursor:
        page = reg.query_assets(limit=10, cursor=cursor)
        rest += page["items"]
        cursor = page["next_cursor"]
    before = [r["uid"] for r in first["items"]] + [r["uid"] for r in rest]
    assert len(before) == len(set(before)) == 31  # no asset twice, none skipped, the older newcomer included
    assert set(before) >= {r["uid"] for r in skewed}
    assert [r["uid"] for r in first["items"]] == expected(skewed)[:10]


def late_and_one_step(reg) -> tuple[Records, Records]:
    late, one_step = Records.of(reg), Records.of(reg)
    late.late_row_lookup, one_step.late_row_lookup = True, False
    return late, one_step


@pytest.mark.parametrize("filters", [{}, {"asset_type": "sprites", "tags": ["common"], "license": "cc0"},
                                     {"tags": ["rare"]}, {"tags": ["even", "rare"], "tags_mode": "any"},
                                     {"asset_type": "audio", "license": "mit"}, {"text": "skewed 1"},
                                     {"asset_type": "audio", "tags": ["nothing"]}])
def test_the_late_row_lookup_returns_the_pages_of_the_one_step_query(reg, skewed, filters):
    # PostgreSQL reads a page's uids first, then those rows by key; SQLite keeps the one-step query
    assert Records.of(reg).late_row_lookup == (reg.db.engine == "postgresql")
    if reg.db.engine == "postgresql":  # short OLTP reads: starting parallel workers costs more than they save
        assert reg.db.query_one("SHOW max_parallel_workers_per_gather") == ("0",)
    late, one_step = late_and_one_step(reg)
    for sort, desc in (("created_at", True), ("created_at", False), ("path", False), ("bytes", True),
                       ("updated_at", True), ("type", False)):
        cursors: list[str | None] = [None, None]
        pages = 0
        while True:
            a, b = (records.query_assets(limit=4, cursor=cur, sort=sort, descending=desc, **filters)
                    for records, cur in zip((late, one_step), cursors, strict=True))
            assert a == b, (sort, desc, pages)
            pages += 1
            cursors = [a["next_cursor"], b["next_cursor"]]
            if not a["next_cursor"]:
                break
        for offset in (0, 3, 29):
            assert late.query_assets(limit=5, offset=offset, sort=sort, descending=desc, with_total=True,
                                     **filters) == one_step.query_assets(limit=5, offset=offset, sort=sort,
                                                                         descending=desc, with_total=True, **filters)
    with traced(reg.db) as statements:
        late.query_assets(limit=4, **filters)
    assert any(s.startswith("SELECT a.* FROM (SELECT a.uid, a.created_at AS sort_key FROM ") for s in statements)


def test_late_row_lookup_cursor_pages_match_while_assets_are_added(reg, skewed, src):
    late, one_step = late_and_one_step(reg)
    cursors: list[str | None] = [None, None]
    seen: list[str] = []
    for i in range(20):
        a, b = (records.query_assets(asset_type="sprites", tags=["common"], license="cc0", limit=3, cursor=cur)
                for records, cur in zip((late, one_step), cursors, strict=True))
        assert a == b, i
        seen += [r["uid"] for r in a["items"]]
        if not a["next_cursor"]:
            break
        cursors = [a["next_cursor"], b["next_cursor"]]
        # a newer asset, one just older than the page boundary, and one of another licence arrive
        boundary = a["items"][-1]["created_at"]
        for j, (created, lic) in enumerate(((3000.0 + i, "cc0"), (boundary - 0.25, "cc0"), (boundary - 0.5, "mit"))):
            reg.register_file(make_file(src, f"late{i}_{j}.bin", f"late {i} {j}"), "sprites", tags=["common"],
                              license_tag=lic, created_at=created)
    assert len(seen) == len(set(seen))
    want = [r["uid"] for r in reg.list_assets(asset_type="sprites", tags=["common"], license="cc0")
            if r["created_at"] < 3000.0]
    assert seen == want  # every older match once, in order, the newcomers behind the cursor included


@pytest.mark.parametrize(("sort", "kind"), [(s, k) for s in ("updated_at", "bytes", "type", "path", "created_at")
                                            for k in (None, "sprites")])
def test_sqlite_reads_every_gallery_sort_in_index_order(reg, skewed, sort, kind):
    for desc in (True, False):
        plans = plans_of(reg, lambda d=desc: reg.query_assets(asset_type=kind, sort=sort, descending=d, limit=5))
        assert plans and all(not [p for p in plan if "TEMP B-TREE" in p or p.startswith("SCAN a")]
                             for plan in plans), plans


def test_the_facade_passes_on_capped_totals_counts_and_ids(reg, skewed):
    """The gallery asks the registry, never its rows object: the facade carries the million-asset paths."""
    sprites = expected(skewed, kind="sprites")
    page = reg.query_assets(asset_type="sprites", with_total=True, total_cap=5, limit=2)
    assert (page["total"], page["total_capped"]) == (5, True)
    assert reg.count_assets(5, asset_type="sprites") == (5, True)
    assert reg.count_assets(None, asset_type="sprites") == (len(sprites), False)
    assert reg.count_assets(tags=["rare"]) == (3, False)
    assert reg.matching_uids(asset_type="sprites") == Records.of(reg).matching_uids(asset_type="sprites")
    assert reg.matching_uids(asset_type="sprites") == sprites  # newest first, as the pages
    assert reg.matching_uids(asset_type="sprites", limit=2) == reg.matching_uids(asset_type="sprites")[:2]
