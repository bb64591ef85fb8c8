"""GET /assets rights filters (issue 13): commercial_use, credit_required, derivatives, license_known."""

from __future__ import annotations

from pathlib import Path

from server_helpers import assert_error

from comfyvn.ingest.mappers import normalise_metadata

CIVITAI_MODEL = {"id": 1, "name": "Hero LoRA", "type": "LORA", "allowNoCredit": False, "allowCommercialUse": "Rent",
                 "allowDerivatives": False, "allowDifferentLicense": False,
                 "modelVersions": [{"id": 2, "baseModel": "SD 1.5", "files": []}]}


async def register(api, path: Path, **extra) -> dict:
    r = await api("POST", "/assets/register", body={"path": str(path), "asset_type": "images", **extra})
    assert r.code == 201, r.body
    return r.json


async def test_list_filters_by_rights_and_follows_a_licence_change(api, make_png):
    terms = normalise_metadata("civitai", CIVITAI_MODEL)["license_terms"]
    civ = await register(api, make_png(), metadata={"license_terms": terms, "base_model": "SD 1.5"})
    cc0 = await register(api, make_png(), license="cc0")
    nc = await register(api, make_png(), license="cc-by-nc-4.0")
    unknown = await register(api, make_png())
    assert civ["license_terms"]["commercial_use"] == "rent" and civ["license_known"] is True

    async def uids(**params) -> set[str]:
        r = await api("GET", "/assets", params=params)
        assert r.code == 200, r.body
        return {x["uid"] for x in r.json["items"]}

    assert await uids(commercial_use="sell") == {cc0["uid"]}
    assert await uids(commercial_use="rent-civit") == {cc0["uid"], civ["uid"]}
    assert await uids(credit_required="false") == {cc0["uid"]}
    assert await uids(credit_required="true") == {civ["uid"], nc["uid"]}
    assert await uids(derivatives="true") == {cc0["uid"], nc["uid"]}
    assert await uids(derivatives="false") == {civ["uid"]}
    assert await uids(license_known="false") == {unknown["uid"]}
    assert await uids(license_known="true", commercial_use="none") == {civ["uid"], cc0["uid"], nc["uid"]}

    r = await api("PATCH", f"/assets/{unknown['uid']}", body={"license": "cc0-1.0"})
    assert r.code == 200, r.body
    assert r.json["license_terms"]["commercial_use"] == "sell"
    assert await uids(commercial_use="sell") == {cc0["uid"], unknown["uid"]}
    assert await uids(license_known="false") == set()
    sidecar = await api("GET", f"/assets/{unknown['uid']}/sidecar")
    assert sidecar.json["sidecar"]["license_terms"]["credit_required"] is False


async def test_bad_rights_parameters_are_400(api, make_png):
    await register(api, make_png(), license="cc0")
    for params, word in (({"commercial_use": "resell"}, "commercial_use"), ({"credit_required": "maybe"},
                         "credit_required"), ({"derivatives": "2"}, "derivatives"),
                         ({"license_known": "yes please"}, "license_known")):
        r = await api("GET", "/assets", params=params)
        assert_error(r, 400, "invalid_parameter", word)
