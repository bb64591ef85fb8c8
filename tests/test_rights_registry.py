"""Licences as structured rights in the registry (issue 13): stored, derived, filtered, migrated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import comfyvn.studio.core.asset_registry as regmod
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.mappers import normalise_metadata
from comfyvn.studio.core.asset_registry import AssetRegistry
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401

CIVITAI_MODEL = {"id": 1, "name": "Hero LoRA", "type": "LORA", "allowNoCredit": False, "allowCommercialUse": "Rent",
                 "allowDerivatives": False, "allowDifferentLicense": False, "creator": {"username": "u"},
                 "modelVersions": [{"id": 2, "baseModel": "SD 1.5", "files": []}]}


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry(project_id="rights")


def put(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(name)
    return path


def register_shapes(reg: AssetRegistry, tmp_path: Path) -> dict[str, dict]:
    """One asset per rights shape: a Civitai pull (terms, no licence), cc0, cc-by-nc-4.0, nothing."""
    pulled = normalise_metadata("civitai", CIVITAI_MODEL)
    meta = {k: v for k, v in pulled.items() if k not in ("tags", "license", "provider") and v not in (None, [], {})}
    return {
        "civitai": reg.register_file(put(tmp_path, "hero.safetensors"), "loras", metadata=meta, origin="civitai",
                                     provenance={"provider": "civitai", "provider_metadata": CIVITAI_MODEL}),
        "cc0": reg.register_file(put(tmp_path, "free.png"), "sprites", license_tag="cc0"),
        "nc": reg.register_file(put(tmp_path, "nc.png"), "sprites", metadata={"license": "cc-by-nc-4.0"}),
        "none": reg.register_file(put(tmp_path, "unknown.png"), "sprites"),
    }


def uids(items: list[dict]) -> set[str]:
    return {a["uid"] for a in items}


def test_each_rights_shape_is_stored_in_the_record(reg, tmp_path):
    a = register_shapes(reg, tmp_path)
    civ = a["civitai"]
    assert civ["license"] is None and civ["license_known"] is True
    assert civ["license_terms"] == {"commercial_use": "rent", "credit_required": True, "derivatives_allowed": False,
                                    "relicense_allowed": False, "source": "provider",
                                    "base_model_license": "creativeml-openrail-m"}
    assert "license_terms" not in civ["meta"]  # a field, not free-form metadata
    assert a["cc0"]["license_terms"] == {"commercial_use": "sell", "credit_required": False,
                                         "derivatives_allowed": True, "relicense_allowed": True, "source": "user",
                                         "base_model_license": None}
    assert a["nc"]["license_terms"]["commercial_use"] == "none" and a["nc"]["license_terms"]["credit_required"]
    assert a["none"]["license_known"] is False and set(a["none"]["license_terms"].values()) == {None}
    assert reg.get_asset(civ["uid"])["license_terms"] == civ["license_terms"]


def test_filters_by_each_rights_parameter(reg, tmp_path):
    a = {k: v["uid"] for k, v in register_shapes(reg, tmp_path).items()}
    assert uids(reg.list_assets(commercial_use="sell")) == {a["cc0"]}
    assert uids(reg.list_assets(commercial_use="rent")) == {a["cc0"], a["civitai"]}
    assert uids(reg.list_assets(commercial_use="image")) == {a["cc0"], a["civitai"]}
    assert uids(reg.list_assets(commercial_use="none")) == {a["cc0"], a["civitai"], a["nc"]}  # not stated: never
    assert uids(reg.list_assets(credit_required=False)) == {a["cc0"]}
    assert uids(reg.list_assets(credit_required=True)) == {a["civitai"], a["nc"]}
    assert uids(reg.list_assets(derivatives=True)) == {a["cc0"], a["nc"]}
    assert uids(reg.list_assets(derivatives=False)) == {a["civitai"]}
    assert uids(reg.list_assets(license_known=False)) == {a["none"]}
    assert uids(reg.list_assets(license_known=True)) == {a["cc0"], a["nc"], a["civitai"]}
    assert uids(reg.list_assets("sprites", commercial_use="image", credit_required=True)) == set()
    page = reg.query_assets(derivatives=True, limit=1, with_total=True)
    assert page["total"] == 2 and page["next_cursor"]
    for bad in ({"commercial_use": "resell"}, {"credit_required": "yes"}, {"license_known": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            reg.list_assets(**bad)


def test_changing_a_licence_moves_its_terms_and_indexed_columns(reg, tmp_path):
    a = register_shapes(reg, tmp_path)
    none_uid, civ_uid = a["none"]["uid"], a["civitai"]["uid"]
    rec = reg.update_asset_meta(none_uid, {"license": "cc-by-4.0"})
    assert rec["license_terms"]["commercial_use"] == "sell" and rec["license_terms"]["credit_required"] is True
    assert none_uid in uids(reg.list_assets(commercial_use="sell", license_known=True))
    (rec,) = reg.bulk_update_tags([none_uid], license_tag="cc-by-nc-4.0")
    assert rec["license_terms"]["commercial_use"] == "none"
    assert none_uid not in uids(reg.list_assets(commercial_use="image"))
    rec = reg.update_asset_meta(none_uid, license_tag=None)
    assert rec["license_known"] is False and none_uid in uids(reg.list_assets(license_known=False))
    # a licence a person sets on a Civitai asset decides; clearing it falls back to Civitai's terms
    rec = reg.update_asset_meta(civ_uid, license_tag="cc0-1.0")
    assert rec["license_terms"]["commercial_use"] == "sell" and rec["license_terms"]["source"] == "user"
    assert rec["license_terms"]["base_model_license"] == "creativeml-openrail-m"
    rec = reg.update_asset_meta(civ_uid, license_tag="")
    assert rec["license_terms"] == a["civitai"]["license_terms"]
    # terms a person states; an echo of the current ones (a record's meta sent back) changes nothing
    rec = reg.update_asset_meta(civ_uid, {"license_terms": {"derivatives_allowed": True}})
    assert rec["license_terms"] == {**a["civitai"]["license_terms"], "derivatives_allowed": True, "source": "user"}
    version = rec["version"]
    assert reg.update_asset_meta(civ_uid, {"license_terms": rec["license_terms"]})["version"] == version
    with pytest.raises(ValueError, match="commercial_use"):
        reg.update_asset_meta(civ_uid, {"license_terms": {"commercial_use": "free"}})


def test_sidecar_and_hook_envelopes_carry_license_terms(reg, tmp_path):
    bus = get_hook_bus(reg.db)
    start = bus.last_id()
    a = register_shapes(reg, tmp_path)
    doc = json.loads(Path(a["civitai"]["sidecar"]).read_text())
    assert doc["license_terms"] == a["civitai"]["license_terms"]
    reg.update_asset_meta(a["none"]["uid"], license_tag="cc0-1.0")
    assert json.loads(Path(a["none"]["sidecar"]).read_text())["license_terms"]["commercial_use"] == "sell"
    envelopes = {(e["event"], e["data"]["uid"]): e["data"] for e in bus.events_after(start)}
    assert envelopes[("on_asset_registered", a["civitai"]["uid"])]["license_terms"]["commercial_use"] == "rent"
    updated = envelopes[("on_asset_meta_updated", a["none"]["uid"])]
    assert updated["license_terms"]["commercial_use"] == "sell" and updated["license"] == "cc0-1.0"


def test_the_migration_rederives_rights_of_rows_registered_before_it(reg, tmp_path):
    a = register_shapes(reg, tmp_path)
    # rows as registry.004_rights left them: columns at their defaults, the pull's (old, wrong) terms
    # inside free-form meta, sidecars without license_terms
    with reg.db.transaction() as conn:
        conn.execute("UPDATE assets SET license_terms = '{}', commercial_rank = NULL, credit_required = NULL,"
                     " derivatives_allowed = NULL, license_known = 0, rights_version = 0, provenance = ?"
                     " WHERE project_id = ? AND uid = ?",
                     (json.dumps({"provider": "civitai", "provider_metadata": CIVITAI_MODEL}), "rights",
                      a["civitai"]["uid"]))
        conn.execute("UPDATE assets SET meta = ? WHERE project_id = ? AND uid = ?",
                     (json.dumps({"license_terms": {"source": "provider", "commercial_use": "image"}}), "rights",
                      a["civitai"]["uid"]))
        conn.execute("UPDATE assets SET license_terms = '{}', commercial_rank = NULL, credit_required = NULL,"
                     " derivatives_allowed = NULL, license_known = 0, rights_version = 0 WHERE project_id = ?"
                     " AND uid != ?", ("rights", a["civitai"]["uid"]))
    assert reg.list_assets(license_known=True) == []
    regmod._RECOVERED.clear()
    reopened = AssetRegistry(project_id="rights")
    civ = reopened.get_asset(a["civitai"]["uid"])
    assert civ["license_terms"] == a["civitai"]["license_terms"]  # from the provider metadata, read again
    assert "license_terms" not in civ["meta"] and civ["provenance"]["license_terms"]["commercial_use"] == "rent"
    assert reopened.get_asset(a["cc0"]["uid"])["license_terms"] == a["cc0"]["license_terms"]
    assert reopened.get_asset(a["nc"]["uid"])["license_terms"] == a["nc"]["license_terms"]
    assert uids(reopened.list_assets(license_known=True)) == {a["civitai"]["uid"], a["cc0"]["uid"], a["nc"]["uid"]}
    assert json.loads(Path(civ["sidecar"]).read_text())["license_terms"]["commercial_use"] == "rent"
    stale = reopened.db.query_one("SELECT COUNT(*) FROM assets WHERE rights_version = 0")[0]
    assert stale == 0
    regmod._RECOVERED.clear()
    assert AssetRegistry(project_id="rights").recover()["rights"] == 0  # once


def test_a_civitai_pull_applied_through_the_queue_is_filterable_by_its_rights(ws, provider_servers, monkeypatch):
    from comfyvn.config import update_config
    from comfyvn.ingest.queue import AssetIngestQueue
    from tests.fakes import CIVITAI_VERSION_ID

    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 100}}, ws)
    queue = AssetIngestQueue(ws)
    try:
        job = queue.enqueue("civitai", remote_url=f"civitai:{CIVITAI_VERSION_ID}", terms_acknowledged=True)
        queue.run_pending(timeout=30)
        [applied] = queue.apply([job["job_id"]])["applied"]
    finally:
        queue.stop_worker()
    reg = AssetRegistry(ws=ws)
    asset = reg.get_asset(applied["asset_uid"])
    assert asset["license"] is None and asset["license_known"] is True
    assert asset["license_terms"]["commercial_use"] == "rent-civit" and asset["license_terms"]["source"] == "provider"
    assert asset["license_terms"]["base_model_license"] == "openrail++"
    assert asset["provenance"]["license_terms"]["commercial_use"] == "rent-civit"
    assert uids(reg.list_assets(commercial_use="rent-civit", license_known=True)) == {asset["uid"]}
    assert reg.list_assets(commercial_use="rent") == []


def test_stated_terms_survive_a_rebuild_from_the_sidecars(reg, tmp_path):
    from comfyvn.registry.rebuild import rebuild_from_disk

    terms = {"commercial_use": "image", "credit_required": True, "source": "user"}  # a person's, no licence
    rec = reg.register_file(put(tmp_path, "bought.png"), "sprites", metadata={"license_terms": terms})
    assert rec["license_known"] is True and rec["license_terms"]["commercial_use"] == "image"
    fresh_db = tmp_path / "rebuilt.sqlite3"  # the database lost: rebuild the registry from the files alone
    rebuild_from_disk(project_id="rights", assets_root=reg.assets_root, db_path=fresh_db)
    rebuilt = AssetRegistry(project_id="rights", assets_root=reg.assets_root, db_path=fresh_db).get_asset(rec["uid"])
    assert rebuilt["license_terms"] == rec["license_terms"] and rebuilt["license_known"] is True
