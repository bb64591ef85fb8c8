"""HTTP: GET /assets/by-hash/{hash} (every form), /api/library status, POST /api/library/scan (202, progress as
hook events, 409 while running), duplicates; every route behind the token."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from comfyvn.config import update_config
from comfyvn.hashforms import hash_path
from comfyvn.hooks.events import read_events
from comfyvn.library.scan import Scanner
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401

OLD_NS = 1_600_000_000 * 10**9


@pytest.fixture
def jp_server_config(ws):
    return Config({"ServerApp": {"jpserver_extensions": {"comfyvn_server_ext": True, "jupyter_server_terminals": False},
                                 "allow_unauthenticated_access": False},
                   "ComfyvnExtension": {"workspace": str(ws.root), "ws_ping_seconds": 60.0}})


@pytest.fixture
def api(jp_fetch):
    async def call(method: str, path: str, *, body: Any = None, headers: dict | None = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "headers": headers}
        if body is not None or method == "POST":
            kwargs["body"] = json.dumps(body) if body is not None else b""
        resp = await jp_fetch(path.lstrip("/"), **kwargs)
        return resp.code, json.loads(resp.body or b"null")
    return call


@pytest.fixture
def root(ws, tmp_path) -> Path:
    folder = tmp_path / "models"
    for rel, data in (("loras/a.safetensors", b"A" * 9000), ("loras/copy/a.safetensors", b"A" * 9000),
                      ("vae/v.pt", b"V" * 1_200_000)):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    update_config({"library": {"roots": [{"name": "comfy", "path": str(folder), "layout": "comfyui"}]}}, ws)
    return folder


async def wait_finished(ws, timeout: float = 30.0) -> dict:
    conn = open_store(ws).conn
    for _ in range(int(timeout / 0.05)):
        done = read_events(conn, topics=["on_library_scan_finished"])
        if done:
            return done[-1]["data"]
        await asyncio.sleep(0.05)
    raise AssertionError("the scan did not finish")


async def test_scan_over_http_then_find_by_every_hash_form(api, ws, root):
    code, started = await api("POST", "/api/library/scan", body={"roots": ["comfy"]})
    assert code == 202 and started["roots"] == ["comfy"]
    summary = await wait_finished(ws)
    assert summary["files"] == 3 and summary["registered"] == 2 and summary["scan_id"] == started["scan_id"]
    progress = read_events(open_store(ws).conn, topics=["on_library_scan_progress"])
    assert progress and progress[-1]["data"]["phase"] == "done"
    forms = hash_path(root / "vae" / "v.pt")
    for value in (forms.sha256, forms.autov2.upper(), f"blake3:{forms.blake3}", forms.crc32, forms.autov1,
                  forms.sha256[:12]):
        code, rec = await api("GET", f"/assets/by-hash/{value}")
        assert code == 200 and rec["abs_path"] == str(root / "vae" / "v.pt"), value
    code, err = await api("GET", "/assets/by-hash/xyz")
    assert code == 400 and err["error"] == "invalid_request" and "hex" in err["message"]
    code, err = await api("GET", f"/assets/by-hash/{'0' * 64}")
    assert code == 404 and err["error"] == "asset_not_found"
    code, status = await api("GET", "/api/library")
    assert code == 200 and status["roots"][0]["files"] == 3 and status["last_scan"]["files"] == 3
    code, dup = await api("GET", "/api/library/duplicates")
    assert code == 200 and dup["reclaimable_bytes"] == 9000 and (root / "loras" / "copy" / "a.safetensors").is_file()


async def test_a_second_scan_is_409_and_bad_roots_400(api, ws, root):
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    holder = Scanner(ws, "default", registry=reg)
    holder.lock.acquire()
    try:
        code, err = await api("POST", "/api/library/scan", body={})
        assert code == 409 and err["error"] == "scan_running"
    finally:
        holder.lock.release()
    for outside in (["nope"], ["/etc"], [str(root.parent)], [str(root / "..")]):  # only configured roots
        code, err = await api("POST", "/api/library/scan", body={"roots": outside})
        assert code == 400 and "not a configured library root" in err["message"], outside
    code, err = await api("POST", "/api/library/scan", body={"roots": "comfy", "extra": 1})
    assert code == 400


async def test_library_routes_require_the_token(api, root):
    for method, path in (("GET", "/api/library"), ("POST", "/api/library/scan"), ("POST", "/api/library/identify"),
                         ("GET", "/api/library/duplicates"), ("GET", f"/assets/by-hash/{'a' * 10}")):
        code, body = await api(method, path, headers={"Authorization": "token nope"})
        assert code == 403 and body["error"] == "forbidden", (method, path)


async def test_identify_over_http_against_the_fake_civitai(api, ws, root, provider_servers):
    fp = provider_servers
    update_config({"ingest": {"providers": {"civitai": {"rate_limit_rps": 100, "rate_limit_burst": 5}}}}, ws)
    known = root / "loras" / "known.safetensors"
    known.write_bytes(fp.civitai_file(1094417).all_bytes())
    os.utime(known, ns=(OLD_NS, OLD_NS))
    code, _ = await api("POST", "/api/library/scan", body={})
    assert code == 202
    await wait_finished(ws)
    code, result = await api("POST", "/api/library/identify")
    assert code == 200 and result["calls"] == 1 and [m["title"] for m in result["matched"]]
    assert result["not_found"] == 2 and result["huggingface"] == []
    code, rec = await api("GET", f"/assets/by-hash/{fp.civitai_file(1094417).sha256[:10]}")
    assert code == 200 and rec["origin"] == "civitai"
    code, again = await api("POST", "/api/library/identify")
    assert code == 200 and again["calls"] == 0 and again["skipped_negative"] == 2


async def test_an_in_place_file_downloads_from_its_root_through_the_confined_reader(api, jp_fetch, ws, root):
    code, _ = await api("POST", "/api/library/scan", body={"roots": ["comfy"]})
    assert code == 202
    await wait_finished(ws)
    code, rec = await api("GET", f"/assets/by-hash/{hash_path(root / 'vae' / 'v.pt').sha256}")
    assert code == 200
    resp = await jp_fetch("assets", rec["uid"], "download", raise_error=False)
    assert resp.code == 200 and resp.body == b"V" * 1_200_000  # was 404: only the assets root was served
    # the file swapped for a symlink to a secret is refused, never followed
    target = root / "vae" / "v.pt"
    target.unlink()
    target.symlink_to("/etc/passwd")
    resp = await jp_fetch("assets", rec["uid"], "download", raise_error=False)
    assert resp.code == 403 and json.loads(resp.body)["error"] == "file_refused"


async def test_autov3_resolves_over_http_once_the_background_phase_has_run(api, ws, root, monkeypatch):
    import comfyvn.library.scan as scan_mod

    monkeypatch.setattr(scan_mod, "DEFER_AUTOV3_FROM", 1)  # the small test files stand for big ones
    lora = root / "loras" / "a.safetensors"
    data = (2).to_bytes(8, "little") + b"{}" + b"L" * 5000
    lora.write_bytes(data)
    os.utime(lora, ns=(OLD_NS, OLD_NS))
    autov3 = hash_path(lora).autov3
    assert autov3 is not None
    code, _ = await api("POST", "/api/library/scan", body={"roots": ["comfy"]})
    assert code == 202
    summary = await wait_finished(ws)
    assert summary["autov3_pending"] == 2  # and the copy, which has no valid header
    conn = open_store(ws).conn
    for _ in range(600):  # the AutoV3 phase ends with a "done" progress event after the summary
        last = read_events(conn, topics=["on_library_scan_progress"])[-1]["data"]
        if last["phase"] == "done":
            break
        await asyncio.sleep(0.05)
    assert last["phase"] == "done" and last["autov3_files"] == 2
    for value in (autov3, autov3[:12].upper()):
        code, rec = await api("GET", f"/assets/by-hash/{value}")
        assert code == 200 and rec["abs_path"] == str(lora), value


async def test_the_scan_route_takes_the_autov3_mode(api, ws, root, monkeypatch):
    import comfyvn.library.scan as scan_mod

    monkeypatch.setattr(scan_mod, "DEFER_AUTOV3_FROM", 1)  # the small test files stand for big ones
    lora = root / "loras" / "a.safetensors"
    lora.write_bytes((2).to_bytes(8, "little") + b"{}" + b"E" * 5000)
    os.utime(lora, ns=(OLD_NS, OLD_NS))
    for bad in ("later", 3, None):
        code, err = await api("POST", "/api/library/scan", body={"roots": ["comfy"], "autov3": bad})
        assert code == 400 and "autov3" in err["message"], bad
    code, _ = await api("POST", "/api/library/scan", body={"roots": ["comfy"], "autov3": "eager"})
    assert code == 202
    summary = await wait_finished(ws)
    assert summary["autov3_pending"] == 0  # eager: computed in the first pass, nothing left for a phase
    code, rec = await api("GET", f"/assets/by-hash/{hash_path(lora).autov3}")
    assert code == 200 and rec["abs_path"] == str(lora)
