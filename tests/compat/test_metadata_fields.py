"""Issue 14, part 1: ``tags``, ``license``, ``origin`` and ``version`` inside a metadata dict are
the asset's own fields (the original registry kept them in ``meta``), never silently parked in
free-form metadata where the tag/licence filters, the gallery and the enforcer cannot see them.
They are shown inside ``meta`` on records, hook payloads and sidecars as well as at the top level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyvn.hooks import get_hook_bus
from comfyvn.studio.core.asset_registry import AssetRegistry, AssetRegistryError, split_metadata

FIELDS = ("tags", "license", "origin", "version")


def put(folder: Path, name: str, data: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data, encoding="utf-8")
    return path


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry("compat")


@pytest.fixture
def src(tmp_path) -> Path:
    return tmp_path / "incoming"


def fields_of(doc: dict) -> dict:
    return {k: doc[k] for k in FIELDS}


def test_fields_inside_register_metadata_are_the_asset_fields(reg, src):
    rec = reg.register_file(put(src, "hero.txt", "hero"), "docs", metadata={
        "tags": ["Hero", "npc", "hero"], "license": "cc0", "origin": "civitai", "notes": "kept"})
    assert (rec["tags"], rec["license"], rec["origin"], rec["version"]) == (["hero", "npc"], "cc0", "civitai", 1)
    assert [r["uid"] for r in reg.list_assets(tags=["hero"])] == [rec["uid"]]
    assert [r["uid"] for r in reg.list_assets(license="cc0")] == [rec["uid"]]
    assert dict(reg.facets()["licenses"]) == {"cc0": 1} and dict(reg.facets()["tags"]) == {"hero": 1, "npc": 1}
    # shown inside meta as well as at the top level, on the record and in the sidecar
    assert fields_of(rec["meta"]) == fields_of(rec) and rec["meta"]["notes"] == "kept"
    side = json.loads(Path(rec["sidecar"]).read_text())
    assert fields_of(side) == fields_of(side["meta"]) == fields_of(rec)
    assert split_metadata(rec["meta"])[0] == {"notes": "kept"}  # stored free-form metadata: no duplicates
    stored = json.loads(reg.db.query_one("SELECT meta FROM assets WHERE uid = ?", (rec["uid"],))[0])
    assert stored == {"notes": "kept"}


def test_tags_argument_and_metadata_tags_are_united_and_blank_licence_is_none(reg, src):
    rec = reg.register_file(put(src, "a.txt", "a"), "docs", tags=["one"],
                            metadata={"tags": ["ONE", "two"], "license": "   "})
    assert rec["tags"] == ["one", "two"] and rec["license"] is None and rec["meta"]["license"] is None


def test_bulk_registration_reads_the_fields_from_metadata(reg, src):
    out = reg.register_files([
        {"source_path": put(src, "b1.txt", "b1"), "asset_type": "docs", "metadata": {"tags": "x, y", "license": "mit"}},
        {"source_path": put(src, "b2.txt", "b2"), "asset_type": "docs", "metadata": {"origin": "huggingface"}},
    ])
    assert (out[0]["tags"], out[0]["license"]) == (["x", "y"], "mit")
    assert out[1]["origin"] == "huggingface" and out[1]["meta"] == {**out[1]["meta"], "origin": "huggingface"}
    assert {r["uid"] for r in reg.list_assets(tags=["y"], license="mit")} == {out[0]["uid"]}


def test_duplicate_registration_unites_metadata_tags_case_insensitively(reg, src):
    first = reg.register_file(put(src, "d.bin", "same"), "binary", metadata={"tags": ["first"], "origin": "dedupe"})
    second = reg.register_file(put(src, "d2.bin", "same"), "binary", metadata={"tags": ["Second", "FIRST"],
                                                                                "origin": "dedupe"})
    assert second["uid"] == first["uid"] and second["tags"] == ["first", "second"]
    [only] = reg.list_assets()
    assert set(only["meta"]["tags"]) == {"first", "second"} and only["meta"]["origin"] == "dedupe"


def test_update_asset_meta_fields(reg, src):
    rec = reg.register_file(put(src, "u.txt", "u"), "docs", tags=["old"], license_tag="cc0")
    updated = reg.update_asset_meta(rec["uid"], {"tags": ["hook-test", "V2"], "origin": "mine", "k": 1})
    assert updated["tags"] == ["hook-test", "v2"] and updated["origin"] == "mine" and updated["license"] == "cc0"
    assert updated["meta"]["tags"] == ["hook-test", "v2"] and updated["meta"]["k"] == 1
    assert reg.list_assets(tags=["old"]) == [] and len(reg.list_assets(tags=["v2"])) == 1
    cleared = reg.update_asset_meta(rec["uid"], {"license": ""})
    assert cleared["license"] is None and reg.list_assets(license="cc0") == []
    relicensed = reg.update_asset_meta(rec["uid"], {"license": "cc-by-4.0"})
    assert relicensed["license"] == "cc-by-4.0" and reg.read_sidecar(rec["uid"])["meta"]["license"] == "cc-by-4.0"


def test_a_records_meta_can_be_edited_and_sent_back(reg, src):
    rec = reg.register_file(put(src, "r.txt", "r"), "docs", tags=["a"], metadata={"k": 1})
    meta = dict(rec["meta"], k=2)
    back = reg.update_asset_meta(rec["uid"], meta, replace=True)
    assert split_metadata(back["meta"])[0] == {"k": 2} and back["tags"] == ["a"] and back["version"] == 2
    with pytest.raises(AssetRegistryError, match="changed meanwhile"):  # meta read at version 1 is stale now
        reg.update_asset_meta(rec["uid"], meta)
    with pytest.raises(ValueError, match="license"):
        reg.update_asset_meta(rec["uid"], {"license": {"spdx": "mit"}})
    assert reg.get_asset(rec["uid"])["version"] == 2


def test_hook_payloads_show_the_fields_inside_meta(reg, src):
    seen: list[dict] = []
    reg.add_hook(AssetRegistry.HOOK_ASSET_META_UPDATED, seen.append)
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    rec = reg.register_file(put(src, "h.txt", "h"), "docs", metadata={"tags": ["hook-test"]})
    reg.update_asset_meta(rec["uid"], {"tags": ["hook-test", "v2"]})
    assert seen[-1]["meta"]["tags"] == ["hook-test", "v2"]
    envelopes = {e["event"]: e["data"] for e in bus.events_after(start)}
    assert envelopes["on_asset_registered"]["meta"]["tags"] == ["hook-test"]
    assert envelopes["on_asset_meta_updated"]["meta"]["tags"] == ["hook-test", "v2"]
