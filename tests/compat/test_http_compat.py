"""Issue 14, part 3: the original's HTTP routes (server_ext/handlers/compat.py), written from the
original's tests/test_assets_provenance_api.py, plus the asset cycle over our own routes with
the original's expectations (``trashed: true``, the hook debug document, the environment roots)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from comfyvn.studio.core import AssetRegistry

ASSET_HOOKS = {"on_asset_saved", "on_asset_registered", "on_asset_meta_updated", "on_asset_removed",
               "on_asset_sidecar_written"}


async def test_public_asset_register_fetch_and_search(api, make_png):
    source = make_png("api_asset.png")
    payload = {"path": str(source), "asset_type": "documents",
               "metadata": {"tags": ["api-test"], "license": "CC-BY-4.0"}}
    r = await api("POST", "/api/assets/register", body=payload)
    assert r.code == 201, r.body  # deliberate difference: 201 for a created asset
    asset_id, asset = r.json["asset_id"], r.json["asset"]
    assert r.json["ok"] is True and asset["id"] == asset_id == asset["uid"]
    assert asset["metadata"]["tags"] == ["api-test"] and asset["tags"] == ["api-test"]
    assert asset["links"]["file"] == "documents/api_asset.png" and asset["links"]["sidecar"].endswith(".asset.json")

    r = await api("GET", f"/api/assets/{asset_id}")
    assert r.code == 200 and r.json["asset"]["id"] == asset_id and r.json["asset"]["metadata"]["license"] == "CC-BY-4.0"

    r = await api("GET", "/api/assets/search", params={"q": source.name})
    assert r.code == 200 and r.json["filters"]["q"] == source.name and r.json["total"] >= 1
    assert any(item["id"] == asset_id for item in r.json["items"])
    r = await api("GET", "/api/assets/search", params={"tag": "API-TEST", "license": "CC-BY-4.0", "include_debug": "1"})
    assert [i["id"] for i in r.json["items"]] == [asset_id] and r.json["debug"]["project_id"] == "default"

    again = await api("POST", "/api/assets/register", body={**payload, "metadata": json.dumps({"tags": ["second"]})})
    assert again.code == 200 and again.json["asset_id"] == asset_id
    assert again.json["asset"]["metadata"]["tags"] == ["api-test", "second"]


async def test_public_asset_routes_refuse_bad_input(api, make_png, tmp_path):
    r = await api("POST", "/api/assets/register", body={"path": str(make_png()), "metadata": "{not json"})
    assert r.code == 400 and r.json["error"] == "invalid_body" and "metadata" in r.json["message"]
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    r = await api("POST", "/api/assets/register", body={"path": str(outside)})
    assert r.code == 403 and r.json["error"] == "source_not_allowed"
    r = await api("GET", "/api/assets/0000000000000000")
    assert r.code == 404 and r.json["error"] == "asset_not_found"
    for method, path, body in (("GET", "/api/assets/search", None), ("GET", "/api/assets/0000000000000000", None),
                               ("POST", "/api/assets/register", {"path": "/x"}),
                               ("GET", "/assets/debug/hooks", None)):
        r = await api(method, path, headers={"Authorization": "token nope"}, body=body)
        assert r.code == 403 and r.json["error"] == "forbidden", path


async def test_upload_get_sidecar_download_delete_cycle(api, ws):
    from server_helpers import png_bytes

    content = png_bytes((123, 45, 67), (8, 8))
    r = await api("POST", "/assets/upload", raw=content, params={
        "filename": "tiny.png", "asset_type": "images", "metadata": json.dumps({"license": "cc0", "user_id": "pytest"})})
    assert r.code == 201, r.body
    uid = r.json["uid"]
    assert r.json["meta"]["license"] == "cc0" and r.json["license"] == "cc0" and r.json["meta"]["user_id"] == "pytest"
    side = (await api("GET", f"/assets/{uid}/sidecar")).json["sidecar"]
    assert side["meta"]["license"] == "cc0" and side["provenance"]["source"] == "upload:tiny.png"
    got = (await api("GET", f"/api/assets/{uid}")).json["asset"]
    assert got["thumb"] == got["metadata"]["preview"]["default"] and set(got["thumbnails"]) == {"256", "512"}
    r = await api("GET", f"/assets/{uid}/download")
    assert r.code == 200 and hashlib.sha256(r.body).hexdigest() == got["hash"]  # the bytes as uploaded
    r = await api("DELETE", f"/assets/{uid}")
    assert r.code == 200 and r.json["trashed"] is True and Path(r.json["trashed_to"], "tiny.png").read_bytes() == content
    assert (await api("GET", f"/api/assets/{uid}")).code == 404


async def test_debug_hooks_carries_registry_and_modder_hooks(api, ws):
    def audit_listener(payload):
        pass

    registry = AssetRegistry(ws=ws)  # same database and project as the server: listeners are shared
    registry.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, audit_listener)
    try:
        r = await api("POST", "/assets/upload", raw=b"sample debug payload",
                      params={"filename": "debug.txt", "asset_type": "documents"})
        uid = r.json["uid"]
        r = await api("GET", "/assets/debug/hooks", params={"limit": 10})
    finally:
        registry.remove_hook(AssetRegistry.HOOK_ASSET_REGISTERED, audit_listener)
    assert r.code == 200 and r.json["ok"] is True
    doc = r.json
    assert set(doc["registry_hooks"]) == set(AssetRegistry.HOOK_EVENTS)
    [described] = [d for d in doc["registry_hooks"]["asset_registered"] if d["name"] == "audit_listener"]
    assert described["repr"].endswith(":test_debug_hooks_carries_registry_and_modder_hooks.<locals>.audit_listener")
    assert any(name.endswith("audit_listener") for name in doc["hooks"]["asset_registered"])  # ours stays
    assert ASSET_HOOKS <= {e["name"] for e in doc["modder_hooks"]["events"]}
    matching = [e for e in doc["modder_hooks"]["history"]
                if e["event"] in ("on_asset_saved", "on_asset_registered") and e["data"]["uid"] == uid]
    assert matching and all(e["data"]["hook_event"] == "asset_registered" for e in matching)
    assert isinstance(matching[0]["data"]["timestamp"], float) and matching[0]["data"]["timestamp_utc"].endswith("Z")
    r = await api("GET", "/assets/debug/hooks", params={"limit": 0})
    assert r.code == 400 and r.json["error"] == "invalid_parameter"


@pytest.fixture
def env_roots(tmp_path, monkeypatch):
    """The original's environment variables, set before the server starts."""
    roots = {"assets": tmp_path / "env-assets", "thumbs": tmp_path / "env-thumbs"}
    monkeypatch.setenv("COMFYVN_ASSETS_ROOT", str(roots["assets"]))
    monkeypatch.setenv("COMFYVN_THUMBS_ROOT", str(roots["thumbs"]))
    return roots


async def test_environment_roots_are_honoured_by_the_server(env_roots, api, ws):
    from server_helpers import png_bytes

    r = await api("POST", "/assets/upload", raw=png_bytes(), params={"filename": "env.png"})
    assert r.code == 201, r.body
    assert Path(r.json["abs_path"]) == (env_roots["assets"] / "default" / "images" / "env.png").resolve()
    assert AssetRegistry.wait_for_thumbnails(30)
    r = await api("GET", f"/assets/{r.json['uid']}/thumbnail", params={"size": "256"})
    assert r.code == 200 and any((env_roots["thumbs"] / "default").rglob("*_256.png"))
    assert not (ws.assets_root / "default" / "images" / "env.png").exists()


def _form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    from test_http_uploads import multipart

    return multipart(*parts)


async def test_original_multipart_upload_form(api, ws):
    """The original's ``curl -F file=@... -F asset_type=... -F license=... -F metadata=... -F user_id=...``."""
    from server_helpers import png_bytes

    content = png_bytes((10, 20, 30), (8, 8))
    body, headers = _form(("file", "form.png", content), ("asset_type", None, b"portraits"),
                          ("license", None, b"CC-BY-4.0"), ("user_id", None, b"modder-7"),
                          ("metadata", None, json.dumps({"tags": ["Hero"], "mood": "calm"}).encode()),
                          ("dest_path", None, b"heroes/form.png"))
    r = await api("POST", "/assets/upload", raw=body, headers=headers)
    assert r.code == 201, r.body
    rec = r.json
    assert rec["ok"] is True and rec["path"] == "heroes/form.png" and rec["type"] == "portraits"
    assert rec["license"] == "CC-BY-4.0" and rec["tags"] == ["hero"] and rec["meta"]["mood"] == "calm"
    assert rec["provenance"]["uploaded_by"] == "modder-7"
    asset = rec["asset"]
    assert asset["id"] == rec["uid"] and asset["metadata"]["license"] == "CC-BY-4.0" and "preview" in asset
    assert Path(rec["abs_path"]).read_bytes() == content  # streamed, the bytes as sent

    raw = await api("POST", "/assets/upload", raw=png_bytes((1, 2, 3)), params={"filename": "raw.png"})
    assert raw.code == 201 and raw.json["ok"] is True and raw.json["asset"]["id"] == raw.json["uid"]  # one shape

    async def refused(parts, params=None, code="invalid_multipart"):
        body, headers = _form(("file", "x.png", png_bytes((5, 5, 5))), *parts)
        r = await api("POST", "/assets/upload", raw=body, headers=headers, params=params)
        assert r.code == 400 and r.json["error"] == code, r.body
        return r.json["message"]

    assert "metadata" in await refused([("metadata", None, b"[1, 2]")], code="invalid_body")
    assert "metadata" in await refused([("metadata", None, b"{not json")], code="invalid_body")
    assert "twice" in await refused([("license", None, b"a"), ("license", None, b"b")])
    assert "unknown form field 'owner'" in await refused([("owner", None, b"me")])
    assert "larger than" in await refused([("metadata", None, b"{" + b" " * (64 * 1024) + b"}")])
    assert "UTF-8" in await refused([("user_id", None, b"\xff\xfe")])
    assert "different values" in await refused([("license", None, b"cc0")], params={"license": "mit"},
                                               code="invalid_body")
    assert "more than one part carrying a file" in await refused([("extra", "y.png", b"second file")])
    body, headers = _form(("asset_type", None, b"images"))  # fields but no file
    r = await api("POST", "/assets/upload", raw=body, headers=headers, params={"filename": "none.png"})
    assert r.code == 400 and "no file part" in r.json["message"]
    listed = (await api("GET", "/assets")).json["items"]
    assert sorted(a["path"] for a in listed) == ["heroes/form.png", "images/raw.png"]
    assert not (ws.data_dir / "uploads").exists() or list((ws.data_dir / "uploads").iterdir()) == []


async def test_ingest_accepts_the_originals_asset_type(api, ingest_on, make_png):
    """``asset_type`` on ingest: an alias of ``asset_type_hint`` (queue, upload), ``asset_type_override`` (apply)."""
    r = await api("POST", "/api/ingest/queue", body={"source_path": str(make_png("q.png")), "asset_type": "sprites"})
    assert r.code == 201, r.body
    assert r.json["asset_type_hint"] == "sprites"
    r = await api("POST", "/api/ingest/upload", raw=b"weights", params={"filename": "w.bin", "asset_type": "models"})
    assert r.code == 201 and r.json["asset_type_hint"] == "models", r.body
    upload_job = r.json["job_id"]
    r = await api("POST", "/api/ingest/apply", body={"job_ids": [upload_job], "asset_type": "checkpoints"})
    assert r.code == 200, r.body
    asset = (await api("GET", f"/assets/{r.json['applied'][0]['asset_uid']}")).json
    assert asset["type"] == "checkpoints"

    r = await api("POST", "/api/ingest/queue", body={"source_path": str(make_png("c.png")), "asset_type": "a",
                                                     "asset_type_hint": "b"})
    assert r.code == 400 and r.json["error"] == "invalid_body" and "asset_type" in r.json["message"]
    r = await api("POST", "/api/ingest/upload", raw=b"x", params={"filename": "x.bin", "asset_type": "a",
                                                                  "asset_type_hint": "b"})
    assert r.code == 400 and r.json["error"] == "invalid_parameter" and "asset_type" in r.json["message"]
    r = await api("POST", "/api/ingest/apply", body={"asset_type": "a", "asset_type_override": "b"})
    assert r.code == 400 and r.json["error"] == "invalid_body"
    r = await api("POST", "/api/ingest/queue", body={"source_path": str(make_png("s.png")), "asset_type": "same",
                                                     "asset_type_hint": "same"})
    assert r.code == 201 and r.json["asset_type_hint"] == "same"  # agreeing values are fine
    assert (await api("GET", "/api/ingest/status")).json["summary"]["counts"]["applied"] == 1  # nothing else ran
