"""POST /api/ingest/queue with ``items``: many server-side files in one request (enqueue_many),
200 {"jobs", "errors"}; at most 10,000 items; remote pulls and ``wait`` refused inside a batch."""

from __future__ import annotations

import hashlib

from server_helpers import assert_error


async def test_a_batch_stages_each_file_and_reports_the_refused_ones(api, ingest_on, make_png):
    ws = ingest_on
    pngs = [make_png() for _ in range(3)]
    secret = ws.root / "incoming" / ".env"
    secret.write_bytes(b"TOKEN=1")
    r = await api("POST", "/api/ingest/queue", body={
        "items": [str(pngs[0]), {"source_path": str(pngs[1]), "metadata": {"tags": ["hero"]}, "pin": True},
                  str(secret), str(ws.root / "incoming" / "missing.png"), str(pngs[0]),
                  {"source_path": str(pngs[2]), "asset_type_hint": "backgrounds"}],
        "asset_type": "images", "metadata": {"tags": ["batch"]}})
    assert r.code == 200, r.body
    jobs, errors = r.json["jobs"], r.json["errors"]
    assert [j["source_path"] for j in jobs] == [str(p) for p in (pngs[0], pngs[1], pngs[0], pngs[2])]
    assert [j["status"] for j in jobs] == ["staged", "staged", "duplicate", "staged"]
    assert jobs[0]["digest"] == hashlib.sha256(pngs[0].read_bytes()).hexdigest()
    assert jobs[0]["asset_type_hint"] == "images" and jobs[3]["asset_type_hint"] == "backgrounds"
    assert jobs[0]["metadata"]["tags"] == ["batch"] and jobs[1]["metadata"]["tags"] == ["hero"]
    assert jobs[1]["pin"] is True and jobs[0]["pin"] is False
    assert [(e["index"], e["error"]) for e in errors] == [(2, "source_refused"), (3, "file_not_found")]
    applied = await api("POST", "/api/ingest/apply", body={"job_ids": [j["job_id"] for j in jobs if j["status"] == "staged"]})
    assert applied.code == 200 and len(applied.json["applied"]) == 3


async def test_more_than_10000_items_are_refused_before_anything_is_staged(api, ingest_on, make_png):
    png = str(make_png())
    r = await api("POST", "/api/ingest/queue", body={"items": [png] * 10_001})
    assert_error(r, 400, "invalid_body", "at most 10000")
    assert (await api("GET", "/api/ingest/status")).json["summary"]["counts"].get("staged", 0) == 0
    missing = str(ingest_on.root / "incoming" / "gone.png")  # quick to refuse: the cap itself is accepted
    r = await api("POST", "/api/ingest/queue", body={"items": [png] + [missing] * 9_999})
    assert r.code == 200 and len(r.json["jobs"]) == 1 and len(r.json["errors"]) == 9_999
    assert r.json["errors"][-1] == {"index": 9_999, "source_path": missing, "error": "file_not_found",
                                    "message": r.json["errors"][-1]["message"]}


async def test_remote_pulls_wait_and_bad_items_are_refused_as_invalid_bodies(api, ingest_on, make_png):
    png = str(make_png())
    cases = [
        ({"items": [{"source_path": png, "remote_url": "https://civitai.com/api/download/models/1"}]}, "remote_url"),
        ({"items": [{"source_path": png, "wait": True}]}, "wait"),
        ({"items": [png], "remote_url": "https://huggingface.co/x/y/resolve/main/z.bin"}, "remote_url"),
        ({"items": [png], "wait": True}, "wait"),
        ({"items": [png], "source_path": png}, "source_path"),
        ({"items": []}, "non-empty list"),
        ({"items": "not a list"}, "non-empty list"),
        ({"items": [png, 7]}, "items[1]: must be a path or an object"),
        ({"items": [{"metadata": {}}]}, "items[0]: field 'source_path' is required"),
        ({"items": [{"source_path": png, "pin": "yes"}]}, "items[0]: field 'pin' must be"),
        ({"items": [png], "metadata": "x"}, "field 'metadata' must be"),
        ({"items": [png], "asset_type": "a", "asset_type_hint": "b"}, "both are given"),
    ]
    for body, message in cases:
        assert_error(await api("POST", "/api/ingest/queue", body=body), 400, "invalid_body", message)
    assert (await api("GET", "/api/ingest/jobs")).json["items"] == []  # nothing was queued


async def test_a_batch_needs_the_token_and_the_feature(api, ws, make_png):
    body = {"items": [str(make_png())]}
    r = await api("POST", "/api/ingest/queue", body=body, headers={"Authorization": "token nope"})
    assert_error(r, 403, "forbidden", "token")
    assert_error(await api("POST", "/api/ingest/queue", body=body), 403, "feature_disabled",
                 "enable_asset_ingest disabled")
