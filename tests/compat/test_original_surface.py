"""Issue 14, part 2: the original registry's Python surface, written from the original's own tests
(tests/test_asset_registry_filters.py, test_asset_registry_rebuild.py, test_asset_provenance.py,
test_modder_asset_hooks.py of Megamjm/Comfyvn-ToolProject) and its documented behaviour."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from comfyvn.core import modder_hooks
from comfyvn.registry.rebuild import rebuild_from_disk
from comfyvn.studio.core import AssetRegistry
from comfyvn.studio.core.asset_registry import AssetNotFoundError

ASSET_HOOKS = ("on_asset_registered", "on_asset_saved", "on_asset_meta_updated", "on_asset_sidecar_written",
               "on_asset_removed")


def _make_registry(tmp_path: Path, **kwargs) -> AssetRegistry:
    return AssetRegistry(db_path=tmp_path / "assets.sqlite", assets_root=tmp_path / "assets",
                         thumb_root=tmp_path / "thumbs", meta_root=kwargs.pop("meta_root", False), project_id="test",
                         **kwargs)


def _png(path: Path, size: int = 32, color: str = "blue") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color=color).save(path)
    return path


class Listener:
    def __init__(self) -> None:
        self.events: dict[str, list[dict]] = defaultdict(list)

    def __call__(self, event: str, payload: dict) -> None:
        self.events[event].append(payload)


# ------------------------------------------------------------------------ constructor
def test_the_original_constructor_and_attributes(ws, tmp_path):
    registry = _make_registry(tmp_path)
    assert registry.ASSETS_ROOT == (tmp_path / "assets").resolve() == registry.assets_root
    assert registry.THUMB_ROOT == (tmp_path / "thumbs").resolve() == registry.thumbnails_root
    assert registry.META_ROOT is None and registry.db_path == (tmp_path / "assets.sqlite").resolve()
    assert registry.db_path.is_file() and not (ws.db_path == registry.db_path)
    other = AssetRegistry()
    assert other.project_id == "default" and other.db_path == ws.db_path


def test_environment_roots_are_honoured(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("COMFYVN_ASSETS_ROOT", str(tmp_path / "env-assets"))
    monkeypatch.setenv("COMFYVN_THUMBS_ROOT", str(tmp_path / "env-thumbs"))
    registry = AssetRegistry("envproj")
    assert registry.ASSETS_ROOT == (tmp_path / "env-assets" / "envproj").resolve()
    assert registry.THUMB_ROOT == (tmp_path / "env-thumbs" / "envproj").resolve()
    asset = registry.register_file(_png(tmp_path / "src" / "e.png"), "images")
    assert AssetRegistry.wait_for_thumbnails(30)
    assert (registry.ASSETS_ROOT / asset["path"]).is_file() and (registry.THUMB_ROOT / asset["thumb"]).is_file()
    explicit = AssetRegistry("envproj", assets_root=tmp_path / "explicit")  # an argument wins over the variable
    assert explicit.ASSETS_ROOT == (tmp_path / "explicit").resolve()


def test_meta_root_writes_and_removes_the_legacy_mirror(ws, tmp_path):
    registry = _make_registry(tmp_path, meta_root=tmp_path / "meta")
    src = tmp_path / "sample.txt"
    src.write_text("hello world", encoding="utf-8")
    asset = registry.register_file(src, "generic")
    mirror = tmp_path / "meta" / "generic" / "sample.json"
    doc = json.loads(mirror.read_text())
    assert doc["id"] == doc["uid"] == asset["uid"] and doc["meta"]["version"] == 1
    registry.update_asset_meta(asset["uid"], {"tags": ["debug"]})
    assert json.loads(mirror.read_text())["tags"] == ["debug"]
    registry.remove_asset(asset["uid"])
    assert not mirror.exists()
    with pytest.raises(ValueError, match="inside the assets root"):
        _make_registry(tmp_path, meta_root=tmp_path / "assets" / "_meta")


# ------------------------------------------------------------------------ list filters
def test_list_assets_supports_hash_tags_and_text_filters(ws, tmp_path):
    registry = _make_registry(tmp_path)
    first_src = tmp_path / "first.txt"
    first_src.write_text("alpha-file", encoding="utf-8")
    first = registry.register_file(first_src, "documents",
                                   metadata={"tags": ["alpha", "hero"], "notes": "The first sample asset."})
    second_src = tmp_path / "second.txt"
    second_src.write_text("beta-file", encoding="utf-8")
    second = registry.register_file(second_src, "documents",
                                    metadata={"tags": ["beta", "npc"], "notes": "Second SAMPLE asset for tests."})

    assert {a["uid"] for a in registry.list_assets()} == {first["uid"], second["uid"]}
    assert [a["uid"] for a in registry.list_assets(hash_value=first["hash"])] == [first["uid"]]
    assert [a["uid"] for a in registry.list_assets(tags=["alpha"])] == [first["uid"]]
    assert [a["uid"] for a in registry.list_assets(tags=["alpha", "hero"])] == [first["uid"]]
    assert [a["uid"] for a in registry.list_assets(tags=["ALPHA"])] == [first["uid"]]
    assert registry.list_assets(tags=["alpha", "missing"]) == []
    assert {a["uid"] for a in registry.list_assets(text="sample")} == {first["uid"], second["uid"]}
    assert [a["uid"] for a in registry.list_assets(text="second.txt")] == [second["uid"]]
    assert len(registry.list_assets("documents", limit=1)) == 1
    assert registry.list_assets(tags=["hero"], license="cc0") == []  # our keywords stay


def test_list_assets_without_a_limit_returns_every_match(ws, tmp_path):
    registry = _make_registry(tmp_path)
    folder = tmp_path / "many"
    folder.mkdir()
    items = []
    for i in range(60):
        (folder / f"f{i}.txt").write_text(f"file {i}")
        items.append({"source_path": folder / f"f{i}.txt", "asset_type": "docs"})
    registry.register_files(items)
    assert len(registry.list_assets()) == 60 and len(registry.list_assets(limit=50)) == 50


# ------------------------------------------------------------------------ dedup, thumbnails, provenance
def test_register_file_deduplicates_by_hash(ws, tmp_path):
    registry = _make_registry(tmp_path)
    source = tmp_path / "duplicate.bin"
    source.write_bytes(b"registry-dedupe-test")
    first = registry.register_file(source, "binary", metadata={"tags": ["first"], "origin": "dedupe"})
    second = registry.register_file(source, "binary", metadata={"tags": ["second"], "origin": "dedupe"})
    assert first["uid"] == second["uid"]
    [only] = registry.list_assets()
    assert set(only["meta"]["tags"]) == {"first", "second"} and only["meta"]["origin"] == "dedupe"


def test_image_thumbnails_256_and_512(ws, tmp_path):
    registry = _make_registry(tmp_path)
    asset = registry.register_file(_png(tmp_path / "sample.png"), "images")
    assert AssetRegistry.wait_for_thumbnails(timeout=10.0) is True
    preview = asset["meta"]["preview"]
    assert set(preview["paths"]) == {"256", "512"} and preview["default"] == preview["paths"]["256"]
    for size, rel in preview["paths"].items():
        with Image.open(registry.THUMB_ROOT / rel) as thumb:  # relative to THUMB_ROOT (our layout)
            assert max(thumb.size) <= int(size)
    assert asset["thumb"] == preview["default"] and asset["id"] == asset["uid"]
    assert asset["links"] == {"file": "images/sample.png", "sidecar": "images/sample.png.asset.json",
                              "thumbnail": asset["thumb"], "thumbnails": preview["paths"]}
    assert registry.resolve_thumbnail_path(asset["uid"]) == registry.THUMB_ROOT / asset["thumb"]


def test_provenance_round_trip_leaves_the_bytes_alone(ws, tmp_path):
    registry = _make_registry(tmp_path, meta_root=tmp_path / "assets_meta")
    source = _png(tmp_path / "source.png", 4, "red")
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    provenance = {"source": "test-suite", "inputs": {"case": "provenance", "step": 1}, "user_id": "pytest"}
    asset = registry.register_file(source, "tests", metadata={"origin": "unit"}, provenance=provenance,
                                   license_tag="CC-BY-4.0")
    assert asset["provenance"]["source"] == "test-suite" and asset["provenance"]["inputs"]["case"] == "provenance"
    assert asset["meta"]["license"] == "CC-BY-4.0" and asset["meta"]["origin"] == "unit"
    sidecar = json.loads((registry.ASSETS_ROOT / asset["sidecar"]).read_text(encoding="utf-8"))
    assert sidecar["provenance"] == asset["provenance"] == registry.get_asset(asset["uid"])["provenance"]
    # deliberate difference: no provenance chunk is stamped into the registered file
    assert hashlib.sha256((registry.ASSETS_ROOT / asset["path"]).read_bytes()).hexdigest() == before == asset["hash"]
    assert AssetRegistry.wait_for_thumbnails(timeout=10.0) is True


# ------------------------------------------------------------------------ hooks
def test_iter_add_remove_hooks(ws, tmp_path):
    registry = _make_registry(tmp_path)

    def cb(payload):
        pass

    registry.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, cb)
    registry.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, cb)  # not added twice
    assert registry.iter_hooks(AssetRegistry.HOOK_ASSET_REGISTERED) == {"asset_registered": (cb,)}
    snapshot = registry.iter_hooks()
    assert set(snapshot) == set(AssetRegistry.HOOK_EVENTS) and snapshot["asset_removed"] == ()
    with pytest.raises(ValueError):
        registry.iter_hooks("asset_exploded")
    assert registry.remove_hook(AssetRegistry.HOOK_ASSET_REGISTERED, cb) is True
    assert not registry.remove_hook(AssetRegistry.HOOK_ASSET_REGISTERED, cb)  # silent when absent
    assert not registry.remove_hook("asset_exploded", cb)


def test_asset_modder_hooks_emit_for_registry_events(ws, tmp_path):
    registry = _make_registry(tmp_path)
    listener = Listener()
    modder_hooks.register_listener(listener, events=list(ASSET_HOOKS))
    try:
        source = tmp_path / "asset.bin"
        source.write_bytes(b"payload-1")
        registered = registry.register_file(source, "binary", metadata={"tags": ["hook-test"], "notes": "baseline"})
        registry.update_asset_meta(registered["uid"], {"tags": ["hook-test", "v2"]})
        registry.ensure_sidecar(registered["uid"], overwrite=True)
        registry.remove_asset(registered["uid"], delete_files=False)
    finally:
        modder_hooks.unregister_listener(listener, events=list(ASSET_HOOKS))
    events = listener.events
    assert set(events) == set(ASSET_HOOKS)
    reg_event = events["on_asset_registered"][0]
    assert reg_event["uid"] == registered["uid"] and reg_event["hook_event"] == "asset_registered"
    assert reg_event["bytes"] == 9 and reg_event["path"].endswith("binary/asset.bin")
    assert events["on_asset_saved"][0]["uid"] == registered["uid"]
    meta_event = events["on_asset_meta_updated"][0]
    assert meta_event["uid"] == registered["uid"] and meta_event["meta"]["tags"] == ["hook-test", "v2"]
    assert events["on_asset_meta_updated"][1]["reason"] == "ensure_sidecar"
    removed = events["on_asset_removed"][0]
    assert removed["uid"] == registered["uid"] and removed["hook_event"] == "asset_removed"
    assert removed["bytes"] == 9 and removed["meta"]["tags"] == ["hook-test", "v2"]
    sidecar_event = events["on_asset_sidecar_written"][-1]
    assert Path(sidecar_event["sidecar"]).suffix == ".json" and sidecar_event["hook_event"] == "asset_sidecar_written"
    for payloads in events.values():
        for payload in payloads:  # the original's epoch-seconds timestamp, ours beside it
            assert isinstance(payload["timestamp"], float) and abs(payload["timestamp"] - time.time()) < 60
            assert payload["timestamp_utc"].endswith("Z")


def test_listener_by_event_name_and_unknown_events(ws, tmp_path):
    registry = _make_registry(tmp_path)
    seen: list[tuple[str, dict]] = []

    def on_registered(event, payload):
        seen.append((event, payload))

    modder_hooks.register_listener("on_asset_registered", on_registered)
    src = tmp_path / "x.txt"
    src.write_text("x")
    uid = registry.register_file(src, "docs")["uid"]
    assert [(e, p["uid"]) for e, p in seen] == [("on_asset_registered", uid)]  # delivered before the call returned
    modder_hooks.unregister_listener("on_asset_registered", on_registered)
    modder_hooks.unregister_listener("on_asset_registered", on_registered)  # silent when absent
    with pytest.raises(ValueError, match="Unsupported modder hook"):
        modder_hooks.register_listener(on_registered, ["on_scene_enter"])
    with pytest.raises(ValueError, match="Unsupported modder hook"):
        modder_hooks.emit("on_scene_enter", {})
    specs = modder_hooks.hook_specs()
    assert set(ASSET_HOOKS) <= set(specs) and specs["on_asset_registered"].ws_topic == "modder.on_asset_registered"
    assert {"uid", "bytes", "timestamp", "timestamp_utc"} <= set(specs["on_asset_registered"].payload_fields)


def test_a_listener_sees_the_events_of_other_processes(ws, subprocess_env):
    listener = Listener()
    modder_hooks.register_listener(listener)
    child = (
        "from pathlib import Path\n"
        "from comfyvn.core import modder_hooks\n"
        "from comfyvn.studio.core import AssetRegistry\n"
        "p = Path('child.txt'); p.write_text('from the child')\n"
        "AssetRegistry().register_file(p, 'docs')\n"
        "modder_hooks.emit('on_asset_ingest_failed', {'job_id': 'j1', 'provider': 'local', 'status': 'failed',"
        " 'digest': None, 'asset_type_hint': None, 'notes': [], 'error': 'boom'})\n"
    )
    try:
        subprocess.run([sys.executable, "-c", child], env=subprocess_env, cwd=ws.root, check=True, timeout=120)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not listener.events.get("on_asset_ingest_failed"):
            time.sleep(0.05)
    finally:
        modder_hooks.unregister_listener(listener)
    assert listener.events["on_asset_registered"][0]["path"].endswith("docs/child.txt")
    assert listener.events["on_asset_ingest_failed"][0]["error"] == "boom"
    recent = modder_hooks.history(limit=50)
    assert [e["event"] for e in recent][-1] == "on_asset_ingest_failed"
    assert isinstance(recent[-1]["data"]["timestamp"], float)


# ------------------------------------------------------------------------ sidecars, paths, removal
def test_ensure_sidecar_and_resolve_path(ws, tmp_path):
    registry = _make_registry(tmp_path)
    src = tmp_path / "s.txt"
    src.write_text("side")
    asset = registry.register_file(src, "docs")
    assert registry.resolve_path(asset["uid"]) == registry.ASSETS_ROOT / "docs" / "s.txt"
    assert registry.resolve_path("0" * 16) is None
    sidecar = registry.ensure_sidecar(asset["uid"])
    assert sidecar == Path(asset["sidecar"]) and sidecar.is_file()
    sidecar.unlink()
    assert registry.ensure_sidecar(asset["uid"]) == sidecar and json.loads(sidecar.read_text())["uid"] == asset["uid"]
    with pytest.raises(KeyError):
        registry.ensure_sidecar("0" * 16)


def test_remove_asset_trashes_the_file_or_deletes_it(ws, tmp_path):
    registry = _make_registry(tmp_path)
    src = tmp_path / "gone.txt"
    src.write_text("gone")
    asset = registry.register_file(src, "docs")
    assert registry.remove_asset(asset["uid"], delete_files=False) is True  # the original's bool
    assert not registry.resolve_path(asset["uid"]) and not (registry.ASSETS_ROOT / "docs" / "gone.txt").exists()
    [trashed] = registry.ws.trash_dir.rglob("gone.txt")
    assert trashed.read_text() == "gone"  # not left in place, not lost
    assert registry.remove_asset(asset["uid"]) is False  # unknown now: False, nothing raised
    assert registry.remove_asset("0" * 16, delete_files=True) is False
    again = registry.register_file(src, "docs")
    assert registry.remove_asset(again["uid"], delete_files=True) is True
    assert not (registry.ASSETS_ROOT / "docs" / "gone.txt").exists() and list(registry.ws.trash_dir.rglob("*.txt")) \
        == [trashed]


def test_remove_asset_record_is_the_same_removal_answering_the_record(ws, tmp_path):
    registry = _make_registry(tmp_path)
    src = tmp_path / "kept.txt"
    src.write_text("kept")
    asset = registry.register_file(src, "docs")
    out = registry.remove_asset_record(asset["uid"])
    assert out["uid"] == asset["uid"] and out["trashed"] is True and out["removed"] is True
    assert (Path(out["trashed_to"]) / "kept.txt").read_text() == "kept" and registry.get_asset(asset["uid"]) is None
    with pytest.raises(AssetNotFoundError):
        registry.remove_asset_record(asset["uid"])
    again = registry.register_file(src, "docs")
    out = registry.remove_asset_record(again["uid"], delete_files=True)
    assert out["trashed"] is False and out["trashed_to"] is None


# ------------------------------------------------------------------------ rebuild
def test_rebuild_from_disk_discovers_manual_assets(ws, tmp_path):
    assets_root = tmp_path / "assets"
    _png(assets_root / "images" / "manual.png", 48, "green")
    db_path, thumbs_root = tmp_path / "registry.sqlite", tmp_path / "thumbs"
    summary = rebuild_from_disk(assets_root=assets_root, db_path=db_path, thumbs_root=thumbs_root, project_id="test",
                                remove_stale=True, wait_for_thumbs=True)
    assert summary.processed == 1 and summary.removed == 0 and summary["registered"][0]["path"] == "images/manual.png"
    registry = AssetRegistry(db_path=db_path, assets_root=assets_root, thumb_root=thumbs_root, project_id="test",
                             meta_root=False)
    [asset] = registry.list_assets()
    paths = asset["meta"]["preview"]["paths"]
    assert set(paths) == {"256", "512"} and all((thumbs_root / rel).is_file() for rel in paths.values())


def test_rebuild_remove_stale_drops_rows_whose_file_is_gone(ws, tmp_path):
    registry = _make_registry(tmp_path)
    src = tmp_path / "stale.txt"
    src.write_text("stale")
    asset = registry.register_file(src, "docs")
    registry.resolve_path(asset["uid"]).unlink()
    kept = rebuild_from_disk(registry, dry_run=True)
    assert kept.removed == 0 and registry.get_asset(asset["uid"]) is not None
    summary = rebuild_from_disk(project_id="test", assets_root=tmp_path / "assets", db_path=tmp_path / "assets.sqlite",
                                thumbs_root=tmp_path / "thumbs", remove_stale=True)
    assert summary.removed == 1 and summary.processed == 0 and registry.get_asset(asset["uid"]) is None
    assert summary.as_dict()["removed_stale"] == [{"uid": asset["uid"], "path": "docs/stale.txt"}]


def test_legacy_payload_converts_an_event_logged_with_the_iso_timestamp():
    """Events logged before ``timestamp`` became epoch seconds still reach listeners in the original's form."""
    old = {"id": 1, "event": "on_asset_removed", "ts": 1.5, "data": {"uid": "u", "timestamp": "1970-01-01T00:00:01.500Z"}}
    assert modder_hooks.legacy_payload(old) == {"uid": "u", "timestamp": 1.5, "timestamp_utc": "1970-01-01T00:00:01.500Z"}
    new = {"id": 2, "event": "on_asset_removed", "ts": 2.25,
           "data": {"uid": "v", "timestamp": 2.25, "timestamp_utc": "1970-01-01T00:00:02.250Z"}}
    assert modder_hooks.legacy_payload(new) == new["data"]
