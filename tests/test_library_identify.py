"""Bulk identification on (the local fake of) Civitai: 100 hashes per call, negative cache, metadata as
a pull fills it, the preview as thumbnail; Hugging Face links by LFS SHA-256; the fake's bulk endpoint."""

from __future__ import annotations

import copy
import io
import json
import os
from pathlib import Path

import httpx
import pytest
from PIL import Image

from comfyvn.config import update_config
from comfyvn.library.identify import identify_unidentified, link_huggingface
from comfyvn.library.scan import scan_library
from comfyvn.studio.core.asset_registry import AssetRegistry
from tests.fakes.provider_server import (
    CIVITAI_VERSION_ID,
    HF_REPO,
    load_fixtures,
    provider_servers_fixture,  # noqa: F401
)

OLD_NS = 1_600_000_000 * 10**9
REAL = Path(__file__).parent / "fixtures" / "providers" / "real"


def png(color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, "PNG")
    return out.getvalue()


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))


@pytest.fixture
def library(ws, tmp_path, provider_servers):
    """250 model files in a ComfyUI tree, three of them published on the fake Civitai."""
    fp = provider_servers
    update_config({"ingest": {"providers": {"civitai": {"rate_limit_rps": 200, "rate_limit_burst": 5}}}}, ws)
    preview = fp.add_file("preview.png", png())
    main = copy.deepcopy(fp.fx["civitai_versions"][CIVITAI_VERSION_ID])
    main["images"][0]["url"] = preview
    fp.fx["civitai_versions"] = {**fp.fx["civitai_versions"], CIVITAI_VERSION_ID: main}
    model = json.loads((REAL / "civitai" / "model-4468-checkpoint-2024.json").read_text())
    made = fp.add_real_civitai_model(model)
    root = tmp_path / "models"
    write(root / "loras" / "inkwash.safetensors", fp.civitai_file(1094417).all_bytes())
    write(root / "checkpoints" / "v5077.safetensors", made[5077].all_bytes())
    write(root / "checkpoints" / "v7496.safetensors", made[7496].all_bytes())
    for i in range(247):
        write(root / "loras" / f"unknown_{i:03d}.safetensors", f"nobody knows file {i}\n".encode() * 40)
    update_config({"library": {"roots": [{"name": "comfy", "path": str(root), "layout": "comfyui"}]}}, ws)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    report = scan_library(ws=ws, registry=reg)
    assert len(report.registered) == 250
    return fp, reg, root


def bulk_calls(fp):
    return fp.requests("civitai", "/api/v1/model-versions/by-hash")


def test_250_files_are_identified_in_3_calls_with_metadata_and_preview(library):
    fp, reg, root = library
    fp.reset()
    report = identify_unidentified(reg)
    calls = bulk_calls(fp)
    assert [c.method for c in calls] == ["POST"] * 3 and report.calls == 3
    assert sorted(len(json.loads(c.body)) for c in calls) == [50, 100, 100]
    assert report.asked == 250 and report.not_found == 247 and len(report.matched) == 3
    # one model call per distinct model (licence terms, creator and tags live on the model)
    assert len(fp.requests("civitai", "/api/v1/models/*")) == report.model_calls == 2
    ink = reg.find_by_hash(fp.civitai_file(1094417).sha256)
    assert ink["origin"] == "civitai" and ink["meta"]["version_id"] == CIVITAI_VERSION_ID
    assert ink["meta"]["title"] and ink["meta"]["author"] and ink["meta"]["base_model"]
    assert ink["meta"]["trained_words"] and ink["tags"]
    assert ink["meta"]["source_url"].startswith("https://civitai.com/models/")
    assert ink["license_terms"]["source"] and ink["license_terms"]["commercial_use"] is not None
    thumbs = reg.thumbnail_status(ink["uid"])
    assert thumbs and all(t["status"] == "ready" and Path(t["path"]).is_file() for t in thumbs.values())
    v5077 = reg.find_by_hash(fp.real_files[5077].sha256)
    assert v5077["meta"]["model_id"] == 4468 and v5077["meta"]["version_id"] == 5057
    # the file bytes were never touched
    assert (root / "loras" / "inkwash.safetensors").read_bytes() == fp.civitai_file(1094417).all_bytes()


def test_the_negative_cache_saves_every_call_until_it_expires(library, ws):
    fp, reg, _ = library
    identify_unidentified(reg)
    fp.reset()
    again = identify_unidentified(reg)
    assert bulk_calls(fp) == [] and again.calls == 0 and again.skipped_negative == 247
    update_config({"library": {"negative_cache_days": 0}}, ws)
    later = identify_unidentified(reg)
    assert later.calls == 3 and later.asked == 247 and later.matched == []


def test_identify_runs_through_the_network_policy(library, ws):
    fp, reg, _ = library
    update_config({"ingest": {"allow_private_addresses": False}}, ws)
    with pytest.raises(Exception, match="private|public|not allowed|refused"):
        identify_unidentified(reg)
    assert bulk_calls(fp) == []


def test_the_fake_bulk_endpoint_answers_as_civitai_does(provider_servers):
    fp = provider_servers
    url = fp.url("civitai") + "/api/v1/model-versions/by-hash"
    main_sha = fp.civitai_file(1094417).sha256
    r = httpx.post(url, json=[main_sha.lower(), "0" * 64])
    assert r.status_code == 200
    versions = r.json()
    assert [v["id"] for v in versions] == [CIVITAI_VERSION_ID]  # the unknown hash is simply absent
    r = httpx.post(url, json=["A" * 64] * 101)
    assert r.status_code == 400 and "Too many hashes" in r.json()["error"]
    r = httpx.post(url, json=[main_sha[:10]])  # AutoV2 is not accepted by the bulk call
    assert r.status_code == 400 and "SHA256" in r.json()["error"]
    r = httpx.post(url, content=b'{"hashes": []}')
    assert r.status_code == 400
    hidden = copy.deepcopy(load_fixtures()["civitai_versions"][CIVITAI_VERSION_ID])
    hidden["status"] = "Draft"
    fp.fx["civitai_versions"] = {**fp.fx["civitai_versions"], CIVITAI_VERSION_ID: hidden}
    assert httpx.post(url, json=[main_sha]).json() == []  # only published versions
    assert httpx.get(fp.url("civitai") + f"/api/v1/model-versions/by-hash/{main_sha}").status_code in (200, 404)


def test_hugging_face_link_by_lfs_sha256(ws, tmp_path, provider_servers):
    fp = provider_servers
    root = tmp_path / "hf"
    payload = fp.hf_file("inkwash_style_xl.safetensors")
    write(root / "inkwash" / "inkwash_style_xl.safetensors", payload.all_bytes())
    (root / "inkwash" / "config.json").write_text(json.dumps({"_name_or_path": HF_REPO}))
    write(root / "other" / "not_from_there.safetensors", b"x" * 5000)
    (root / "other" / "config.json").write_text(json.dumps({"_name_or_path": HF_REPO}))
    update_config({"library": {"roots": [{"name": "hf", "path": str(root), "layout": "plain"}]}}, ws)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    scan_library(ws=ws, registry=reg)
    linked = link_huggingface(reg)
    assert [(x["repo"], x["file"]) for x in linked] == [(HF_REPO, "inkwash_style_xl.safetensors")]
    asset = reg.find_by_hash(payload.sha256)
    assert asset["origin"] == "huggingface" and asset["meta"]["hf_repo"] == HF_REPO
    assert reg.find_by_hash(__import__("hashlib").sha256(b"x" * 5000).hexdigest())["origin"] == "library"
