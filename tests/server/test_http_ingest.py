"""/api/ingest/* routes: the feature gate, local enqueue/apply/release/retry/cancel, listing,
streamed uploads, remote pulls (202) and rate limiting (429 + Retry-After)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from comfyvn_server_ext.routes import ROUTES, http_methods
from server_helpers import assert_error, png_bytes

from comfyvn.config import set_feature, update_config
from tests.fakes.provider_server import FakeProviders

INGEST_ROUTES = [(path, method) for path, handler in ROUTES if path.startswith("/api/ingest")
                 for method in http_methods(handler)]


async def test_every_ingest_route_is_gated_by_the_flag(api, ws, make_png):
    assert len(INGEST_ROUTES) == 9
    for path, method in INGEST_ROUTES:
        r = await api(method, path.replace("{job_id}", "abc"), body={"job_id": "abc"} if method == "POST" else None)
        assert_error(r, 403, "feature_disabled", "enable_asset_ingest disabled")
    # the flag is re-read from the workspace config: no restart needed, either way
    set_feature("enable_asset_ingest", True, ws)
    assert (await api("GET", "/api/ingest/status")).code == 200
    set_feature("enable_asset_ingest", False, ws)
    assert_error(await api("POST", "/api/ingest/queue", body={"source_path": str(make_png())}), 403,
                 "feature_disabled", "enable_asset_ingest disabled")


async def test_local_file_lifecycle(api, ingest_on, make_png):
    src = make_png()
    r = await api("POST", "/api/ingest/queue", body={"source_path": str(src), "asset_type_hint": "images",
                                                     "metadata": {"tags": ["hero"]}})
    assert r.code == 201, r.body
    job = r.json
    assert job["status"] == "staged" and job["digest"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert Path(job["staging_path"]).read_bytes() == src.read_bytes()

    dup = await api("POST", "/api/ingest/queue", body={"source_path": str(src)})
    assert dup.code == 200 and dup.json["status"] == "duplicate" and dup.json["dedup_of"] == job["job_id"]
    assert "duplicate.staged" in dup.json["notes"]

    status = (await api("GET", "/api/ingest/status", params={"include_cache": "true", "limit": "1"})).json
    assert status["enabled"] is True and status["summary"]["counts"]["staged"] == 1
    assert status["summary"]["counts"]["duplicate"] == 1 and len(status["jobs"]) == 1
    assert status["cache"][job["digest"]]["job_id"] == job["job_id"]
    one = (await api("GET", "/api/ingest/status", params={"job_id": job["job_id"]})).json
    assert one["job"]["job_id"] == job["job_id"] and "summary" not in one and "cache" not in one
    assert (await api("GET", f"/api/ingest/jobs/{job['job_id']}")).json["status"] == "staged"

    r = await api("POST", "/api/ingest/apply", body={"job_ids": [job["job_id"]]})
    assert r.code == 200, r.body
    [applied] = r.json["applied"]
    assert applied["status"] == "applied" and r.json["failed"] == [] and r.json["unknown"] == []
    asset = (await api("GET", f"/assets/{applied['asset_uid']}")).json
    assert asset["type"] == "images" and asset["tags"] == ["hero"]
    assert_error(await api("POST", "/api/ingest/release", body={"job_id": job["job_id"]}), 409,
                 "invalid_transition", "applied")

    second = (await api("POST", "/api/ingest/queue", body={"source_path": str(make_png())})).json
    r = await api("POST", "/api/ingest/cancel", body={"job_id": second["job_id"]})
    assert r.code == 200 and r.json["status"] == "cancelled"
    r = await api("POST", "/api/ingest/retry", body={"job_id": second["job_id"]})
    assert r.code == 200 and r.json["status"] == "staged" and r.json["attempts"] == 2
    r = await api("POST", "/api/ingest/release", body={"job_id": second["job_id"]})
    assert r.code == 200 and r.json["status"] == "released"
    assert_error(await api("POST", "/api/ingest/retry", body={"job_id": job["job_id"]}), 409, "invalid_transition")
    assert_error(await api("POST", "/api/ingest/cancel", body={"job_id": "nope"}), 404, "job_not_found", "nope")
    r = await api("POST", "/api/ingest/apply", body={"job_ids": ["nope"]})
    assert r.code == 200 and r.json["unknown"] == ["nope"]


async def test_job_listing_filters_and_cursor(api, ingest_on, make_png):
    ids = [(await api("POST", "/api/ingest/queue", body={"source_path": str(make_png())})).json["job_id"]
           for _ in range(5)]
    await api("POST", "/api/ingest/release", body={"job_id": ids[0]})
    seen, cursor = [], None
    while True:
        page = (await api("GET", "/api/ingest/jobs", params={"limit": "2"} | ({"cursor": cursor} if cursor else {}))).json
        seen += [j["job_id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids[::-1]  # newest first, each once
    staged = (await api("GET", "/api/ingest/jobs", params={"status": "staged", "provider": "local"})).json["items"]
    assert [j["job_id"] for j in staged] == ids[:0:-1]
    assert (await api("GET", "/api/ingest/jobs", params={"provider": "civitai"})).json["items"] == []
    assert_error(await api("GET", "/api/ingest/jobs", params={"status": "done"}), 400, "invalid_parameter", "status")
    assert_error(await api("GET", "/api/ingest/jobs", params={"limit": "0"}), 400, "invalid_parameter", "limit")
    assert_error(await api("GET", "/api/ingest/jobs", params={"cursor": "x"}), 400, "invalid_parameter", "cursor")
    assert_error(await api("GET", "/api/ingest/jobs/nope"), 404, "job_not_found")
    assert_error(await api("GET", "/api/ingest/status", params={"job_id": "nope"}), 404, "job_not_found")
    assert_error(await api("GET", "/api/ingest/status", params={"include_cache": "sure"}), 400, "invalid_parameter")


async def test_bad_ingest_bodies_are_clear_400s(api, ingest_on, make_png, tmp_path):
    src = str(make_png())
    outside = tmp_path / "outside.png"
    outside.write_bytes(png_bytes())
    cases = [
        ({}, 400, "invalid_body", "exactly one"),
        ({"source_path": src, "remote_url": "https://civitai.com/x"}, 400, "invalid_body", "exactly one"),
        ({"source_path": src, "pin": "yes"}, 400, "invalid_body", "pin"),
        ({"source_path": src, "metadata": ["a"]}, 400, "invalid_body", "metadata"),
        ({"source_path": src, "jobid": 1}, 400, "invalid_body", "jobid"),
        ({"source_path": src, "provider": "dropbox"}, 400, "invalid_request", "unknown provider"),
        ({"source_path": src, "asset_type_hint": "Bad Type"}, 400, "invalid_request", "asset_type_hint"),
        ({"source_path": src, "dest_relative": "../up"}, 400, "unsafe_path", ".."),
        ({"source_path": str(outside)}, 403, "source_not_allowed", "allowed_source_roots"),
        ({"source_path": str(Path(src).with_name("missing.png"))}, 400, "file_not_found", "missing.png"),
        ({"remote_url": "https://civitai.com/api/download/models/1"}, 400, "terms_not_acknowledged", "terms"),
        ({"remote_url": "https://evil.example/x.bin", "provider": "civitai", "terms_acknowledged": True}, 400,
         "host_not_allowed", "allowlist"),
    ]
    for body, code, error, word in cases:
        assert_error(await api("POST", "/api/ingest/queue", body=body), code, error, word)
    assert_error(await api("POST", "/api/ingest/queue", raw=b"[1, 2"), 400, "invalid_json")
    for route in ("release", "retry", "cancel"):
        assert_error(await api("POST", f"/api/ingest/{route}", body={}), 400, "invalid_body", "job_id")
        assert_error(await api("POST", f"/api/ingest/{route}", body={"job_id": 5}), 400, "invalid_body", "job_id")
    assert_error(await api("POST", "/api/ingest/apply", body={"job_ids": []}), 400, "invalid_body", "job_ids")
    assert_error(await api("POST", "/api/ingest/apply", body={"job_ids": [1]}), 400, "invalid_body", "job_ids")
    assert_error(await api("POST", "/api/ingest/apply", body={"asset_type_override": "No!"}), 400,
                 "invalid_request", "asset_type_override")
    assert (await api("GET", "/api/ingest/jobs")).json["items"] == []  # nothing half-made


async def test_streamed_upload_is_staged(api, ingest_on, ws):
    content = os.urandom(3 * 1024 * 1024 + 7)
    r = await api("POST", "/api/ingest/upload", raw=content,
                  params={"filename": "C:\\Users\\me\\lora v2.safetensors", "asset_type_hint": "models",
                          "metadata": '{"title": "Lora v2"}', "pin": "true"})
    assert r.code == 201, r.body
    job = r.json
    assert job["status"] == "staged" and job["pin"] is True and job["digest"] == hashlib.sha256(content).hexdigest()
    staged = Path(job["staging_path"])
    assert job["filename"] == "lora v2.safetensors" and staged.read_bytes() == content
    assert not any(p.is_file() for p in (ws.data_dir / "uploads").rglob("*"))  # the temporary copy is gone
    dup = await api("POST", "/api/ingest/upload", raw=content, params={"filename": "again.safetensors"})
    assert dup.code == 200 and dup.json["status"] == "duplicate" and dup.json["dedup_of"] == job["job_id"]
    applied = (await api("POST", "/api/ingest/apply", body={})).json["applied"]
    assert [a["job_id"] for a in applied] == [job["job_id"]]
    asset = (await api("GET", f"/assets/{applied[0]['asset_uid']}")).json
    assert asset["path"] == "models/lora v2.safetensors" and asset["meta"]["title"] == "Lora v2"

    assert_error(await api("POST", "/api/ingest/upload", raw=b"x"), 400, "invalid_parameter", "filename")
    assert_error(await api("POST", "/api/ingest/upload", raw=b"x", params={"filename": "a.bin", "metadata": "{"}),
                 400, "invalid_parameter", "metadata")
    assert_error(await api("POST", "/api/ingest/upload", raw=b"x", params={"filename": "a.bin", "pin": "2"}),
                 400, "invalid_parameter", "pin")
    assert_error(await api("POST", "/api/ingest/upload", raw=b"", params={"filename": "a.bin"}), 400,
                 "empty_upload")


async def wait_for_status(api, job_id: str, wanted: set[str], deadline_s: float = 60) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        job = (await api("GET", f"/api/ingest/jobs/{job_id}")).json
        if job["status"] in wanted or loop.time() > end:
            return job
        await asyncio.sleep(0.05)


async def test_remote_pull_is_accepted_then_pulled_by_the_worker(api, ingest_on, ws):
    with FakeProviders() as fp:
        fp.configure(ws)
        update_config({"ingest": {"rate_limit_rps": 0.01, "rate_limit_burst": 1}}, ws)  # one pull per 100 s
        url = fp.hf_resolve_url()
        r = await api("POST", "/api/ingest/queue", body={"remote_url": url, "terms_acknowledged": True})
        assert r.code == 202, r.body
        assert r.json["status"] in ("queued", "downloading") and r.json["provider"] == "huggingface"
        job = await wait_for_status(api, r.json["job_id"], {"staged", "failed", "duplicate"})
        assert job["status"] == "staged", job
        payload = fp.hf_file("inkwash_style_xl.safetensors")
        assert job["digest"] == payload.sha256 and job["bytes"] == payload.size
        assert Path(job["staging_path"]).stat().st_size == payload.size

        # the worker took the bucket's only token: wait=true answers 429 + Retry-After instead of sleeping
        r = await api("POST", "/api/ingest/queue", body={"remote_url": url, "terms_acknowledged": True,
                                                         "wait": True})
        assert_error(r, 429, "rate_limited", "try again in")
        assert 1 <= int(r.headers["Retry-After"]) <= 100
        # without wait the same pull is accepted and waits in the queue
        r = await api("POST", "/api/ingest/queue", body={"remote_url": url, "terms_acknowledged": True})
        assert r.code == 202 and r.json["status"] == "queued"


async def test_a_repeated_status_shows_every_commit_and_the_live_rate_limits(api, ingest_on, ws, make_png):
    """The status's database part is served again while nothing commits; a commit by another
    process's connection, the buckets refilling with time and a config change all show at once."""
    from comfyvn.ingest.queue import AssetIngestQueue

    first = (await api("GET", "/api/ingest/status")).json
    assert (await api("GET", "/api/ingest/status")).json["summary"]["counts"] == first["summary"]["counts"]

    other = AssetIngestQueue(ws)  # another connection, as a kernel's
    job = other.enqueue(source_path=str(make_png()))
    status = (await api("GET", "/api/ingest/status")).json
    assert status["summary"]["counts"]["staged"] == first["summary"]["counts"]["staged"] + 1
    assert status["jobs"][0]["job_id"] == job["job_id"] and status["summary"]["staged_bytes"] == job["bytes"]

    update_config({"ingest": {"rate_limit_rps": 2, "rate_limit_burst": 1}}, ws)  # no database commit
    assert other.limiter.try_acquire("civitai") == 0.0  # the bucket is now empty
    drained = (await api("GET", "/api/ingest/status")).json["summary"]["rate_limits"]["civitai"]
    assert drained["rate"] == 2.0 and drained["tokens"] < 1 and drained["retry_after"] > 0
    await asyncio.sleep(0.1)  # nothing commits: the same stored bucket, refilled meanwhile
    later = (await api("GET", "/api/ingest/status")).json["summary"]["rate_limits"]["civitai"]
    assert later["tokens"] > drained["tokens"] and later["retry_after"] < drained["retry_after"]
    update_config({"ingest": {"providers": {"civitai": {"rate_limit_rps": "fast"}}}}, ws)
    rates = (await api("GET", "/api/ingest/status")).json["summary"]["rate_limits"]
    assert "must be numbers" in rates["civitai"]["error"] and rates["huggingface"]["rate"] == 2.0
