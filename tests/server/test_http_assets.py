"""/assets/* routes: list, one asset, metadata, delete, sidecar, thumbnails, download, upload,
register, bulk edits and the debug surfaces."""

from __future__ import annotations

import hashlib
import io
import json
import os
import wave
from pathlib import Path

import pytest
from PIL import Image
from server_helpers import assert_error, png_bytes

from comfyvn.hooks import emit, get_hook_bus
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry, split_metadata


async def register(api, path: Path, asset_type: str = "images", **extra) -> dict:
    r = await api("POST", "/assets/register", body={"path": str(path), "asset_type": asset_type, **extra})
    assert r.code == 201, r.body
    return r.json


async def test_list_filters_and_cursor(api, make_png, ws):
    a = await register(api, make_png(), tags=["hero", "red"], license="cc0")
    b = await register(api, make_png(), tags=["hero"], license="cc-by-4.0")
    c = await register(api, make_png(), "portraits", tags=["villain"], metadata={"artist": "Mika"})
    bin_path = ws.root / "incoming" / "weights.safetensors"
    bin_path.write_bytes(os.urandom(2048))
    d = await register(api, bin_path, "models")

    r = await api("GET", "/assets", params={"total": "true"})
    assert r.code == 200 and r.json["total"] == 4 and r.json["project"] == "default"
    assert [x["uid"] for x in r.json["items"]] == [d["uid"], c["uid"], b["uid"], a["uid"]]  # newest first

    async def uids(**params) -> set[str]:
        r = await api("GET", "/assets", params=params)
        assert r.code == 200, r.body
        return {x["uid"] for x in r.json["items"]}

    assert await uids(type="images") == {a["uid"], b["uid"]}
    assert await uids(tags="hero,red") == {a["uid"]}
    assert await uids(tags="red,villain", tags_mode="any") == {a["uid"], c["uid"]}
    assert await uids(license="cc-by-4.0") == {b["uid"]}
    assert await uids(text="mika") == {c["uid"]}
    assert await uids(hash=d["hash"]) == {d["uid"]}

    seen, cursor = [], None
    while True:
        params = {"limit": "3", "sort": "path", "order": "asc"} | ({"cursor": cursor} if cursor else {})
        page = (await api("GET", "/assets", params=params)).json
        seen += [x["path"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == 4

    for params, word in [({"sort": "size"}, "sort"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                         ({"tags_mode": "some"}, "tags_mode"), ({"order": "up"}, "order"),
                         ({"cursor": "garbage!"}, "cursor"), ({"project": "no such/project"}, "project"),
                         ({"total": "maybe"}, "total")]:
        r = await api("GET", "/assets", params=params)
        assert r.code == 400, (params, r.body)
        assert word in r.json["message"], r.json


async def test_get_patch_delete(api, make_png, ws):
    rec = await register(api, make_png())
    uid = rec["uid"]

    r = await api("GET", f"/assets/{uid}")
    assert r.code == 200 and r.json["uid"] == uid and "256" in r.json["thumbnails"]
    assert_error(await api("GET", "/assets/0123456789abcdef"), 404, "asset_not_found", "0123456789abcdef")

    r = await api("PATCH", f"/assets/{uid}", body={"metadata": {"artist": "mika"}, "add_tags": ["Hero"],
                                                    "license": "cc0", "expected_version": 1})
    assert r.code == 200, r.body
    assert (r.json["version"], split_metadata(r.json["meta"])[0], r.json["tags"], r.json["license"]) == (2, {"artist": "mika"},
                                                                                       ["hero"], "cc0")
    sidecar = (await api("GET", f"/assets/{uid}/sidecar")).json
    assert sidecar["uid"] == uid and split_metadata(sidecar["sidecar"]["meta"])[0] == {"artist": "mika"}
    assert sidecar["sidecar"]["license"] == "cc0"

    assert_error(await api("PATCH", f"/assets/{uid}", body={"add_tags": ["x"], "expected_version": 1}),
                 409, "asset_conflict", "changed meanwhile")
    assert_error(await api("PATCH", f"/assets/{uid}", body={}), 400, "invalid_body", "nothing to update")
    assert_error(await api("PATCH", f"/assets/{uid}", body={"metadata": "artist"}), 400, "invalid_body", "metadata")
    assert_error(await api("PATCH", f"/assets/{uid}", body={"tags": ["x"]}), 400, "invalid_body", "tags")
    assert_error(await api("PATCH", f"/assets/{uid}", raw=b"{not json"), 400, "invalid_json")
    r = await api("PATCH", f"/assets/{uid}", body={"license": None, "remove_tags": "hero"})
    assert r.code == 200 and r.json["license"] is None and r.json["tags"] == []

    file_path = Path(rec["abs_path"])
    r = await api("DELETE", f"/assets/{uid}")
    assert r.code == 200, r.body
    trash = Path(r.json["trashed_to"])
    assert not file_path.exists() and (trash / file_path.name).is_file()
    assert (trash / (file_path.name + ".asset.json")).is_file()
    assert_error(await api("DELETE", f"/assets/{uid}"), 404, "asset_not_found")

    other = await register(api, make_png())
    r = await api("DELETE", f"/assets/{other['uid']}", params={"delete_files": "true"})
    assert r.code == 200 and r.json["trashed_to"] is None
    assert not Path(other["abs_path"]).exists() and not Path(other["sidecar"]).exists()
    assert_error(await api("DELETE", f"/assets/{uid}", params={"delete_files": "perhaps"}), 400,
                 "invalid_parameter", "delete_files")


async def test_sidecar_missing_or_corrupt(api, make_png):
    rec = await register(api, make_png())
    Path(rec["sidecar"]).write_text("{broken", encoding="utf-8")
    assert_error(await api("GET", f"/assets/{rec['uid']}/sidecar"), 409, "asset_conflict", "not valid JSON")
    Path(rec["sidecar"]).unlink()
    assert_error(await api("GET", f"/assets/{rec['uid']}/sidecar"), 409, "asset_conflict", "enforcer")
    assert_error(await api("GET", "/assets/ffffffffffffffff/sidecar"), 404, "asset_not_found")


async def test_thumbnail_and_download(api, make_png, ws):
    rec = await register(api, make_png())
    uid = rec["uid"]
    assert AssetRegistry.wait_for_thumbnails(30)
    r = await api("GET", f"/assets/{uid}/thumbnail")
    assert r.code == 200 and r.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(r.body)).size == (64, 48)  # never upscaled
    r512 = await api("GET", f"/assets/{uid}/thumbnail", params={"size": "512"})
    assert r512.code == 200 and r512.body[:8] == b"\x89PNG\r\n\x1a\n"
    assert_error(await api("GET", f"/assets/{uid}/thumbnail", params={"size": "100"}), 400, "invalid_parameter",
                 "256")
    assert_error(await api("GET", f"/assets/{uid}/thumbnail", params={"size": "waveform"}), 404, "no_thumbnail")

    wav_path = ws.root / "incoming" / "voice.wav"
    with wave.open(str(wav_path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"".join(int(i * 30).to_bytes(2, "little", signed=True) for i in range(-800, 800)))
    voice = await register(api, wav_path, "audio")
    assert AssetRegistry.wait_for_thumbnails(30)
    r = await api("GET", f"/assets/{voice['uid']}/thumbnail", params={"size": "waveform"})
    assert r.code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.json["sample_rate"] == 8000 and r.json["frames"] == 1600 and max(r.json["peaks"]) > 0.7

    open_store(ws).conn.execute("UPDATE thumbnails SET status = 'pending' WHERE uid = ?", (uid,))
    r = await api("GET", f"/assets/{uid}/thumbnail")
    assert_error(r, 503, "thumbnail_pending")
    assert r.headers["Retry-After"] == "1"

    big = ws.root / "incoming" / "voice.bin"
    content = os.urandom(3 * 1024 * 1024 + 123)  # several chunks
    big.write_bytes(content)
    blob = await register(api, big, "audio")
    r = await api("GET", f"/assets/{blob['uid']}/download")
    assert r.code == 200 and r.body == content
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["Content-Disposition"] == "attachment; filename=\"voice.bin\"; filename*=UTF-8''voice.bin"
    assert r.headers["ETag"] == f'"{blob["hash"]}"'
    r = await api("GET", f"/assets/{blob['uid']}/download", headers={"If-None-Match": f'"{blob["hash"]}"'})
    assert r.code == 304 and r.body == b""
    accented = ws.root / "incoming" / "héros \"1\".bin"
    accented.write_bytes(b"accented")
    named = await register(api, accented, "models")
    r = await api("GET", f"/assets/{named['uid']}/download")
    assert r.headers["Content-Disposition"] == ("attachment; filename=\"h?ros _1_.bin\"; "
                                                "filename*=UTF-8''h%C3%A9ros%20%221%22.bin")
    assert_error(await api("GET", f"/assets/{blob['uid']}/thumbnail"), 404, "no_thumbnail")
    assert_error(await api("GET", "/assets/0000000000000000/download"), 404, "asset_not_found")
    Path(blob["abs_path"]).unlink()
    assert_error(await api("GET", f"/assets/{blob['uid']}/download"), 404, "file_missing")


async def test_upload_streams_and_registers(api, ws):
    content = png_bytes((1, 2, 3), (1200, 900))
    content += os.urandom(2 * 1024 * 1024)  # trailing bytes: still a PNG, several flushes
    r = await api("POST", "/assets/upload", raw=content,
                  params={"filename": "../../dir/evil:na*me.png", "tags": "hero,Red", "license": "cc0",
                          "metadata": '{"artist": "mika"}'})
    assert r.code == 201, r.body
    rec = r.json
    assert rec["path"] == "images/evil_na_me.png" and rec["type"] == "images"
    assert rec["hash"] == hashlib.sha256(content).hexdigest()
    assert rec["tags"] == ["hero", "red"] and rec["license"] == "cc0" and split_metadata(rec["meta"])[0] == {"artist": "mika"}
    assert rec["origin"] == "upload" and rec["provenance"]["source"] == "upload:evil_na_me.png"
    assert Path(rec["abs_path"]).read_bytes() == content

    again = await api("POST", "/assets/upload", raw=content, params={"filename": "copy.png"})
    assert again.code == 200 and again.json["uid"] == rec["uid"]
    other = await api("POST", "/assets/upload", raw=b"weights", params={"filename": "w.safetensors",
                                                                        "asset_type": "models",
                                                                        "dest_relative": "models/sd/"})
    assert other.code == 201 and other.json["path"] == "models/sd/w.safetensors"

    assert_error(await api("POST", "/assets/upload", raw=b"abc"), 400, "invalid_parameter", "filename")
    assert_error(await api("POST", "/assets/upload", raw=b"abc", params={"filename": "../.."}), 400,
                 "invalid_parameter", "filename")
    assert_error(await api("POST", "/assets/upload", raw=b"abc", params={"filename": "x.xyz"}), 400,
                 "invalid_parameter", "asset_type")
    assert_error(await api("POST", "/assets/upload", raw=b"", params={"filename": "e.png"}), 400, "empty_upload")
    assert_error(await api("POST", "/assets/upload", raw=b"abc", params={"filename": "m.bin", "asset_type": "BAD"}),
                 400, "invalid_request", "asset_type")
    assert_error(await api("POST", "/assets/upload", raw=b"abc",
                           params={"filename": "m.bin", "asset_type": "models", "dest_relative": "../escape"}),
                 400, "unsafe_path")
    leftovers = [p for p in (ws.data_dir / "uploads").rglob("*")] if (ws.data_dir / "uploads").exists() else []
    assert leftovers == []


@pytest.mark.comfyvn(max_upload_bytes=4096, max_json_bytes=256)
async def test_body_limits(api, ws, make_png):
    r = await api("POST", "/assets/upload", raw=os.urandom(5000), params={"filename": "big.png"})
    assert_error(r, 413, "payload_too_large", "4096")
    r = await api("POST", "/assets/upload", raw=os.urandom(4096), params={"filename": "fits.bin",
                                                                         "asset_type": "models"})
    assert r.code == 201
    body = {"path": str(make_png()), "asset_type": "images", "metadata": {"note": "x" * 400}}
    assert_error(await api("POST", "/assets/register", body=body), 413, "payload_too_large", "256")
    assert not any(p.is_file() for p in (ws.data_dir / "uploads").rglob("*"))


async def test_register_only_from_allowed_roots(api, make_png, ws, tmp_path):
    path = make_png()
    assert_error(await api("POST", "/assets/register", body={"path": str(path), "asset_type": "images",
                                                             "copy": False}), 400, "copy_required", "copy=true")
    r = await api("POST", "/assets/register", body={"path": str(path), "asset_type": "images", "tags": "a, b"})
    assert r.code == 201 and r.json["tags"] == ["a", "b"] and path.exists()  # copied; copy=false never moves it
    again = make_png("again.png", color=(9, 9, 9))
    first = await api("POST", "/assets/register", body={"path": str(again), "asset_type": "images"})
    dup = await api("POST", "/assets/register", body={"path": str(again), "asset_type": "images"})
    assert (first.code, dup.code) == (201, 200) and dup.json["uid"] == first.json["uid"]

    outside = tmp_path / "outside" / "secret.png"
    outside.parent.mkdir()
    outside.write_bytes(png_bytes())
    assert_error(await api("POST", "/assets/register", body={"path": str(outside), "asset_type": "images"}),
                 403, "source_not_allowed", "allowed_source_roots")
    sneaky = ws.root / "incoming" / "link.png"
    sneaky.symlink_to(outside)
    assert_error(await api("POST", "/assets/register", body={"path": str(sneaky), "asset_type": "images"}),
                 403, "source_not_allowed")
    assert_error(await api("POST", "/assets/register", body={"path": "incoming/x.png", "asset_type": "images"}),
                 400, "invalid_body", "absolute")
    assert_error(await api("POST", "/assets/register", body={"path": str(ws.root / "nope.png"),
                                                             "asset_type": "images"}), 400, "file_not_found")
    assert_error(await api("POST", "/assets/register", body={"path": str(again)}), 400, "invalid_body",
                 "asset_type")
    assert_error(await api("POST", "/assets/register", body={"path": str(again), "asset_type": "images",
                                                             "licence": "cc0"}), 400, "invalid_body", "licence")
    assert_error(await api("POST", "/assets/register", body=[str(again)]), 400, "invalid_body", "object")
    assert_error(await api("POST", "/assets/register"), 400, "invalid_body", "required")


async def test_bulk_tags_and_licence(api, make_png):
    uids = [(await register(api, make_png(), tags=["old"]))["uid"] for _ in range(3)]
    r = await api("POST", "/assets/bulk", body={"uids": uids, "add_tags": ["hero"], "remove_tags": ["old"],
                                                "license": "cc0"})
    assert r.code == 200 and r.json["count"] == 3
    assert all(x["tags"] == ["hero"] and x["license"] == "cc0" for x in r.json["items"])
    r = await api("POST", "/assets/bulk", body={"uids": uids[:1], "license": None})
    assert r.code == 200 and r.json["items"][0]["license"] is None
    listed = (await api("GET", "/assets", params={"license": "cc0"})).json["items"]
    assert {x["uid"] for x in listed} == set(uids[1:])

    assert_error(await api("POST", "/assets/bulk", body={"uids": [*uids, "ffffffffffffffff"], "add_tags": "x"}),
                 404, "asset_not_found", "ffffffffffffffff")
    assert all("x" not in x["tags"] for x in (await api("GET", "/assets")).json["items"])  # all or nothing
    assert_error(await api("POST", "/assets/bulk", body={"uids": [], "add_tags": ["x"]}), 400, "invalid_body", "uids")
    assert_error(await api("POST", "/assets/bulk", body={"uids": uids}), 400, "invalid_body", "nothing to update")
    assert_error(await api("POST", "/assets/bulk", body={"uids": uids, "license": 5}), 400, "invalid_body", "license")


async def test_debug_surfaces(api, make_png, ws):
    reg = AssetRegistry(ws=ws)

    def on_saved(payload):  # an in-process listener the debug route must show
        pass

    reg.add_hook(AssetRegistry.HOOK_ASSET_REGISTERED, on_saved)
    try:
        r = await api("GET", "/assets/debug/hooks")
        assert r.code == 200 and r.json["project"] == "default"
        assert set(r.json["hooks"]) == set(AssetRegistry.HOOK_EVENTS)
        assert any(name.endswith("on_saved") for name in r.json["hooks"]["asset_registered"])
    finally:
        reg.remove_hook(AssetRegistry.HOOK_ASSET_REGISTERED, on_saved)

    specs = (await api("GET", "/assets/debug/modder-hooks")).json["hooks"]
    assert {s["name"] for s in specs} == {"on_asset_registered", "on_asset_saved", "on_asset_meta_updated",
                                          "on_asset_removed", "on_asset_sidecar_written"}
    assert all({"hook_event", "timestamp", "uid"} <= set(s["payload"]) for s in specs)

    rec = await register(api, make_png())
    db = open_store(ws)
    with db.transaction() as conn:  # a burst of other events after the asset change
        for i in range(300):
            emit(conn, "on_modder_test", {"message": f"noise {i}"})
    get_hook_bus(db).poke()
    items = (await api("GET", "/assets/debug/history", params={"limit": "3"})).json["items"]
    assert [x["event"] for x in items] == ["on_asset_registered", "on_asset_saved", "on_asset_sidecar_written"]
    assert items[0]["data"]["uid"] == rec["uid"] and items[0]["data"]["hook_event"] == "asset_registered"
    assert {"id", "event", "ts", "data"} <= set(items[0]) and "timestamp" in items[0]["data"]
    assert_error(await api("GET", "/assets/debug/history", params={"limit": "0"}), 400, "invalid_parameter")


@pytest.mark.parametrize("constant", [float("nan"), float("inf"), float("-inf")])
async def test_nan_and_infinity_are_not_json_and_never_stored(api, make_png, constant):
    """Python's json accepts NaN/Infinity; stored, they made every later answer, history page and
    webhook body invalid for strict parsers (browsers among them)."""
    rec = (await api("POST", "/assets/register", body={"path": str(make_png()), "asset_type": "images"})).json
    bad = await api("PATCH", f"/assets/{rec['uid']}", body={"metadata": {"score": constant}})
    assert_error(bad, 400, "invalid_json", "not JSON")
    bad = await api("POST", "/assets/register", body={"path": str(make_png("b.png", color=(1, 2, 3))),
                                                     "asset_type": "images", "metadata": {"score": constant}})
    assert_error(bad, 400, "invalid_json", "not JSON")
    history = await api("GET", "/api/modder/hooks/history", params={"limit": 100})
    json.loads(history.body, parse_constant=lambda c: pytest.fail(f"{c} in the history"))


async def test_a_repeated_page_shows_every_change_committed_since(api, make_png, ws):
    """Repeated GET /assets pages come from a cache; any commit, by this server or another process's
    connection, is visible in the very next answer."""
    a = await register(api, make_png(), tags=["hero"])
    first = (await api("GET", "/assets", params={"total": "true"})).json
    assert (await api("GET", "/assets", params={"total": "true"})).json == first  # unchanged: the same page

    other = AssetRegistry("default", ws=ws, make_thumbnails=False)  # another connection, as a kernel's
    src = ws.root / "incoming" / "other.bin"
    src.write_bytes(os.urandom(1000))
    b = other.register_file(src, "models")
    page = (await api("GET", "/assets", params={"total": "true"})).json
    assert page["total"] == 2 and [x["uid"] for x in page["items"]] == [b["uid"], a["uid"]]

    other.update_asset_meta(a["uid"], None, add_tags=["villain"])
    page = (await api("GET", "/assets", params={"total": "true"})).json
    assert next(x for x in page["items"] if x["uid"] == a["uid"])["tags"] == ["hero", "villain"]

    r = await api("PATCH", f"/assets/{a['uid']}", body={"license": "cc0"})  # through this server
    assert r.code == 200, r.body
    page = (await api("GET", "/assets", params={"total": "true"})).json
    assert next(x for x in page["items"] if x["uid"] == a["uid"])["license"] == "cc0"


def test_the_page_cache_is_bounded(ws):
    from comfyvn_server_ext.handlers.assets import PageCache

    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    cache = PageCache(reg)
    for i in range(PageCache.MAX_PAGES * 2):
        assert cache.get(("page", i), lambda i=i: b"x" * 1000 + str(i).encode()).endswith(str(i).encode())
    assert len(cache._pages) == PageCache.MAX_PAGES
    big = b"y" * (PageCache.MAX_BYTES // 4 - 1)
    for i in range(8):
        cache.get(("big", i), lambda: big)
    assert cache._bytes <= PageCache.MAX_BYTES and len(cache._pages) <= PageCache.MAX_PAGES
    assert cache.get(("huge",), lambda: b"z" * PageCache.MAX_BYTES) and ("huge",) not in cache._pages
