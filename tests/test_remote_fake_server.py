"""The fake providers answer like the real ones (other suites rely on them)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.fakes import CIVITAI_CDN_HOST, HF_GATED_REPO, HF_REPO, FakeProviders, Payload


@pytest.fixture(scope="module")
def fp():
    with FakeProviders() as servers:
        yield servers


@pytest.fixture
def client(fp):
    fp.reset()
    with httpx.Client(timeout=10) as c:
        yield c


def test_civitai_api_shapes(fp, client):
    base = fp.civitai_base
    assert client.get(f"{base}/api/v1/models/913572").json()["modelVersions"][0]["id"] == 1184630
    assert client.get(f"{base}/api/v1/models/5").json() == {"error": "No model with id 5"}
    by_hash = client.get(f"{base}/api/v1/model-versions/by-hash/"
                         "49f1527441d0d29bf9bc874ebeb8033cb5ccf850f80ab55e57db3417e90bd4f5")
    assert by_hash.status_code == 200 and by_hash.json()["id"] == 1021947  # case-insensitive
    r = client.get(f"{base}/api/download/models/1184630")
    assert r.status_code == 307 and "content-disposition" not in r.headers
    assert r.headers["location"].startswith(f"http://{CIVITAI_CDN_HOST}/model/")


def test_storage_host_range_and_if_range(fp, client):
    loc = client.get(f"{fp.civitai_base}/api/download/models/1184630").headers["location"]
    cdn = loc.replace(f"http://{CIVITAI_CDN_HOST}", fp.url("civitai_cdn"))
    whole = client.get(cdn)
    data = fp.civitai_file(1094417).all_bytes()
    assert whole.content == data and whole.headers["content-disposition"] == \
        'attachment; filename="inkwashHeroine_v20.safetensors"'
    etag = whole.headers["etag"]
    part = client.get(cdn, headers={"Range": "bytes=100-", "If-Range": etag})
    assert part.status_code == 206 and part.content == data[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    stale = client.get(cdn, headers={"Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    assert client.get(cdn, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    assert client.get(cdn.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403


def test_huggingface_resolve_shapes(fp, client):
    r = client.head(f"{fp.hf_base}/{HF_REPO}/resolve/main/inkwash_style_xl.safetensors")
    assert r.status_code == 302
    assert r.headers["x-linked-etag"] == '"b22bf75fe033635108ca7e75a809cbbb5ece93e5642afa9895ee619dbb5f585c"'
    assert r.headers["x-linked-size"] == "4718613" and r.headers["x-repo-commit"]
    small = client.head(f"{fp.hf_base}/{HF_REPO}/resolve/main/README.md")
    assert small.status_code == 307 and small.headers["location"].startswith("/api/resolve-cache/models/")
    follow = client.get(fp.hf_base + small.headers["location"].split("?")[0])  # path only, as huggingface_hub
    assert follow.status_code == 200 and follow.content.startswith(b"---\nlicense: openrail++")
    gated = client.head(f"{fp.hf_base}/{HF_GATED_REPO}/resolve/main/heroine_ckpt_v1.safetensors")
    assert (gated.status_code, gated.headers["x-error-code"]) == (401, "GatedRepo")
    ok = client.head(f"{fp.hf_base}/{HF_GATED_REPO}/resolve/main/heroine_ckpt_v1.safetensors",
                     headers={"Authorization": f"Bearer {fp.hf_token}"})
    assert ok.status_code == 302
    info = client.get(f"{fp.hf_base}/api/models/{HF_REPO}").json()
    assert info["siblings"][0] == {"rfilename": ".gitattributes"}  # no blobs unless asked
    assert "lfs" in client.get(f"{fp.hf_base}/api/models/{HF_REPO}?blobs=true").json()["siblings"][3]


def test_faults_cut_chunked_and_skip(fp, client):
    payload = Payload(seed=b"abc", size=10_000)
    fp.add_file("f.bin", payload)
    url = fp.url("civitai_cdn") + "/files/f.bin"
    fp.inject("civitai_cdn", "/files/*", "cut", after=1000, skip=1)
    assert client.get(url).content == payload.all_bytes()  # skipped
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    fp.inject("civitai_cdn", "/files/*", "oversize", extra=5, chunked=True)
    r = client.get(url)
    assert "content-length" not in r.headers and len(r.content) == 10_005
    assert hashlib.sha256(client.get(url).content).hexdigest() == payload.sha256  # faults are one-shot
    assert [x.path for x in fp.requests("civitai_cdn")] == ["/files/f.bin"] * 4


def test_real_shapes_are_served_like_the_captures(fp, client):
    import json
    from pathlib import Path

    real = Path(__file__).parent / "fixtures" / "providers" / "real"
    capture = json.loads((real / "huggingface" / "redirect-bert-base-uncased.json").read_text(encoding="utf-8"))
    info = json.loads((real / "huggingface" / "model-google-bert-bert-base-uncased.json").read_text(encoding="utf-8"))
    fp.add_real_hf_repo(info, {"model.safetensors": Payload(data=b"w" * 1000, filename="model.safetensors")},
                        alias="bert-base-uncased")
    r = client.get(f"{fp.hf_base}/api/models/bert-base-uncased")
    assert (r.status_code, r.headers["location"], r.text) == (capture["status"], capture["headers"]["Location"],
                                                             capture["body"])
    blobs = client.get(f"{fp.hf_base}/api/models/google-bert/bert-base-uncased?blobs=true").json()
    sib = next(s for s in blobs["siblings"] if s["rfilename"] == "model.safetensors")
    assert sib["lfs"]["sha256"] == hashlib.sha256(b"w" * 1000).hexdigest() and blobs["id"] == info["id"]
    model = json.loads((real / "civitai" / "model-4468-checkpoint-2024.json").read_text(encoding="utf-8"))
    made = fp.add_real_civitai_model(model)
    served = client.get(f"{fp.civitai_base}/api/v1/models/4468").json()
    assert served["allowCommercialUse"] == model["allowCommercialUse"] and served["creator"] == model["creator"]
    version = client.get(f"{fp.civitai_base}/api/v1/model-versions/57618").json()
    assert version["modelId"] == 4468 and version["model"]["type"] == "Checkpoint"
    loc = client.get(f"{fp.civitai_base}/api/download/models/57618").headers["location"]
    body = client.get(loc.replace(f"http://{CIVITAI_CDN_HOST}", fp.url("civitai_cdn"))).content
    assert body == made[41079].all_bytes()  # the primary fp16 twin, not its same-named fp32 sibling
