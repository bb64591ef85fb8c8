"""comfyvn.client against a real ``jupyter server`` process (plus error parsing on canned answers)."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from live_server import live_server  # noqa: F401  (module-scoped fixture)
from PIL import Image

from comfyvn.client import (
    ApiError,
    AuthError,
    BadRequest,
    ComfyvnClient,
    Conflict,
    FeatureDisabled,
    NotFoundError,
    RateLimited,
    ServerUnreachable,
)
from comfyvn.hooks import HOOK_SPECS
from comfyvn.hooks.webhooks import verify

SECRET = "client-test-secret-7d1e"


def png_bytes(color: tuple[int, int, int], size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def api(live_server):  # noqa: F811
    with live_server.client() as client:
        yield client


# ------------------------------------------------------------------------------ errors
def _canned(status: int, body: dict | str, headers: dict | None = None) -> ComfyvnClient:
    def handler(request: httpx.Request) -> httpx.Response:
        content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return ComfyvnClient("http://api.invalid/", token="t", transport=httpx.MockTransport(handler))


def test_error_answers_become_typed_exceptions():
    with pytest.raises(RateLimited) as rl:
        _canned(429, {"error": "rate_limited", "message": "civitai: 1 request per 3 s"},
                {"Retry-After": "3"}).status()
    assert (rl.value.status, rl.value.code, rl.value.retry_after) == (429, "rate_limited", 3.0)
    assert "1 request per 3 s" in str(rl.value)
    with pytest.raises(ApiError) as err:
        _canned(502, "<html>bad gateway</html>").hooks()
    assert type(err.value) is ApiError and err.value.code == "http_502" and "bad gateway" in err.value.message
    with pytest.raises(ValueError, match="base_url"):
        ComfyvnClient("127.0.0.1:8888")


def test_token_auth_and_env_fallback(live_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("JUPYTER_TOKEN", live_server.token)
    with ComfyvnClient(live_server.base_url) as from_env:
        assert {h["name"] for h in from_env.hooks()["hooks"]} == set(HOOK_SPECS)
    monkeypatch.delenv("JUPYTER_TOKEN")
    for token in (None, "wrong-token"):
        with ComfyvnClient(live_server.base_url, token=token) as anon:
            with pytest.raises(AuthError) as exc:
                anon.hooks()
            assert exc.value.status == 403
            with pytest.raises(AuthError):
                anon.subscribe()
    with ComfyvnClient(f"http://127.0.0.1:{live_server.port}/nothing-here/", token=live_server.token) as lost:
        with pytest.raises(NotFoundError):
            lost.hooks()


def test_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ComfyvnClient(f"http://127.0.0.1:{port}/", token="t", timeout=5) as client:
        with pytest.raises(ServerUnreachable, match="cannot reach"):
            client.hooks()


# ------------------------------------------------------------------------------ ingest + assets
def test_ingest_and_asset_round_trip(api, live_server, tmp_path):  # noqa: F811
    art = tmp_path / "hero.png"
    art.write_bytes(png_bytes((200, 30, 30)))
    job = api.upload(art, asset_type_hint="characters", metadata={"title": "Hero", "author": "kim"})
    assert job["status"] == "staged" and job["digest"] and job["metadata"]["author"] == "kim"
    assert api.job(job["job_id"])["status"] == "staged"
    assert api.status(job["job_id"])["job"]["job_id"] == job["job_id"]
    status = api.status(include_cache=True, limit=5)
    assert status["summary"]["counts"]["staged"] >= 1 and "cache" in status
    assert job["job_id"] in [j["job_id"] for j in api.jobs(status="staged")["items"]]
    again = api.upload(art)
    assert again["status"] == "duplicate" and again["dedup_of"] == job["job_id"]
    api.release(again["job_id"])

    applied = api.apply([job["job_id"]])
    [done] = applied["applied"]
    uid = done["asset_uid"]
    with pytest.raises(Conflict, match="applied"):
        api.release(job["job_id"])

    rec = api.asset(uid)
    assert rec["type"] == "characters" and rec["meta"]["title"] == "Hero"
    assert uid in [a["uid"] for a in api.assets(type="characters")["items"]]
    assert [a["uid"] for a in api.iter_assets(page_size=1, type="characters")] == [uid]
    assert api.sidecar(uid)["sidecar"]["uid"] == uid
    (tmp_path / "out").mkdir()
    saved = api.download(uid, tmp_path / "out")
    assert saved.name == "hero.png" and saved.read_bytes() == art.read_bytes()
    assert api.download(uid, tmp_path / "copy.png").read_bytes() == art.read_bytes()
    assert not list((tmp_path / "out").glob("*.part"))

    updated = api.update_meta(uid, {"mood": "angry"}, add_tags=["hero"], license_tag="CC-BY-4.0")
    assert updated["meta"]["mood"] == "angry" and "hero" in updated["tags"] and updated["license"] == "CC-BY-4.0"
    with pytest.raises(Conflict):
        api.update_meta(uid, {"mood": "calm"}, expected_version=1)
    bulk = api.bulk([uid], add_tags=["bulk"], license_tag=None)
    assert bulk["count"] == 1 and "bulk" in bulk["items"][0]["tags"] and bulk["items"][0]["license"] is None
    assert [a["uid"] for a in api.assets(tags=["hero", "bulk"])["items"]] == [uid]
    assert api.debug_modder_hooks()["hooks"]
    assert "asset_registered" in api.debug_hooks()["hooks"]
    history = api.debug_history(limit=50)["items"]
    assert {"on_asset_registered", "on_asset_meta_updated"} <= {e["event"] for e in history}

    thumb = None
    for _ in range(100):  # the server makes thumbnails in the background (503 + Retry-After meanwhile)
        try:
            thumb = api.thumbnail(uid)
            break
        except ApiError as exc:
            assert exc.status == 503, exc
            threading.Event().wait(0.05)
    assert thumb is not None and thumb.startswith(b"\x89PNG")

    on_server = live_server.ws.root / "incoming" / "sidekick.png"
    on_server.parent.mkdir(exist_ok=True)
    on_server.write_bytes(png_bytes((0, 200, 0)))
    registered = api.register_asset(on_server, "characters", tags=["sidekick"], license_tag="CC0-1.0")
    assert registered["tags"] == ["sidekick"] and registered["license"] == "CC0-1.0"
    assert on_server.exists()  # copied by default
    with pytest.raises(AuthError, match="allowed_source_roots") as outside:
        api.register_asset(art, "characters")  # exists, but outside the workspace and home
    assert outside.value.code == "source_not_allowed"

    other = tmp_path / "villain.png"
    other.write_bytes(png_bytes((10, 10, 200)))
    direct = api.upload_asset(other, "characters", tags=["villain"])
    assert direct["tags"] == ["villain"]
    removed = api.delete_asset(direct["uid"])
    assert removed
    with pytest.raises(NotFoundError):
        api.asset(direct["uid"])
    with pytest.raises(NotFoundError):
        api.sidecar("0000000000000000")


def test_enqueue_cancel_retry_and_bad_input(api, live_server):  # noqa: F811
    source = live_server.ws.root / "incoming" / "bgm.png"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(png_bytes((1, 2, 3)))
    job = api.enqueue(source, asset_type_hint="backgrounds")
    assert job["status"] == "staged"
    assert api.cancel(job["job_id"])["status"] == "cancelled"
    assert api.retry(job["job_id"])["status"] == "staged"
    assert api.release(job["job_id"])["status"] == "released"
    seen = [j["job_id"] for j in api.iter_jobs(page_size=1)]
    assert job["job_id"] in seen and len(seen) == len(set(seen)) >= 2
    with pytest.raises(BadRequest, match="exactly one of"):
        api.enqueue()
    with pytest.raises(NotFoundError):
        api.job("no-such-job")
    with pytest.raises(BadRequest, match="status must be one of"):
        api.jobs(status="exploded")


def test_feature_flag_off_raises_feature_disabled(api, live_server):  # noqa: F811
    live_server.set_feature("enable_asset_ingest", False)
    try:
        with pytest.raises(FeatureDisabled, match="enable_asset_ingest disabled") as exc:
            api.status()
        assert exc.value.status == 403 and not isinstance(exc.value, AuthError)
    finally:
        live_server.set_feature("enable_asset_ingest", True)
    assert "summary" in api.status()


# ------------------------------------------------------------------------------ hooks
def test_hooks_history_test_event_and_websocket_resume(api):
    assert {h["name"] for h in api.hooks()["hooks"]} == set(HOOK_SPECS)
    assert {h["category"] for h in api.hooks("ingest")["hooks"]} == {"ingest"}
    with api.subscribe(["on_modder_test"]) as sub:
        assert sub.ack["type"] == "ack" and sub.ack["topics"] == ["on_modder_test"]
        first = api.test_event("one")
        env = sub.recv(timeout=10)
        assert env["id"] == first["id"] and env["event"] == "on_modder_test"
        assert env["data"]["message"] == "one" and "type" not in env
        assert sub.last_event_id == first["id"]
    missed = [api.test_event(f"missed {i}")["id"] for i in range(3)]
    with api.subscribe(["on_modder_test"], last_event_id=first["id"]) as resumed:
        got = [resumed.recv(timeout=10)["id"] for _ in range(3)]
    assert got == missed
    history = api.history(limit=3, topics=["on_modder_test"])["items"]
    assert [e["id"] for e in history] == missed
    with api.subscribe(path="api/modder/hooks/stream") as stream:
        assert stream.ack["topics"] is None
        assert stream.ping()["type"] == "pong"
        assert stream.resubscribe(["on_modder_test"], last_event_id=missed[0])["last_event_id"] == missed[0]
        events = iter(stream)
        assert [next(events)["id"], next(events)["id"]] == missed[1:]
        with pytest.raises(BadRequest, match="unknown hook"):
            stream.resubscribe(["on_nope"])
        api.test_event("still subscribed")
        assert stream.recv(timeout=10)["data"]["message"] == "still subscribed"
    with pytest.raises(BadRequest, match="unknown hook 'on_nope'"):
        api.subscribe(["on_nope"])
    with pytest.raises(BadRequest):
        api.history(topics=["on_nope"])


def test_webhook_crud_and_signed_delivery(api, live_server):  # noqa: F811
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"body": body, "valid": verify(SECRET, self.headers["X-Comfyvn-Timestamp"], body,
                                                           self.headers["X-Comfyvn-Signature"])})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        hook = api.register_webhook("on_modder_test", url, secret=SECRET)
        assert hook["has_secret"] is True and hook["event"] == "on_modder_test"
        assert api.webhook(hook["id"]) == {**hook, "deliveries": api.webhook(hook["id"])["deliveries"]}
        assert hook["id"] in [h["id"] for h in api.webhooks()]
        env = api.test_event("to the webhook")
        for _ in range(400):
            if any(d["ok"] for d in api.deliveries(hook["id"])):
                break
            threading.Event().wait(0.05)
        [attempt] = api.deliveries(hook["id"])
        assert attempt["ok"] and attempt["status_code"] == 204 and attempt["event_id"] == env["id"]
        assert len(received) == 1 and received[0]["valid"] and json.loads(received[0]["body"])["id"] == env["id"]
        everything = json.dumps([api.webhooks(), api.webhook(hook["id"]), api.deliveries(hook["id"])])
        assert SECRET not in everything
        with pytest.raises(BadRequest, match="unknown hook"):
            api.register_webhook("on_nope", url)
        with pytest.raises(BadRequest, match="http or https"):
            api.register_webhook("on_modder_test", "ftp://example.org/x")
        api.delete_webhook(hook["id"])
        with pytest.raises(NotFoundError):
            api.webhook(hook["id"])
        with pytest.raises(NotFoundError):
            api.deliveries(hook["id"])
    finally:
        server.shutdown()
        server.server_close()


def test_openapi_lists_every_route(api):
    paths = api.openapi()["paths"]
    for route in ("/api/ingest/queue", "/api/ingest/jobs/{job_id}", "/assets/{uid}/thumbnail",
                  "/api/modder/hooks/webhooks/{webhook_id}/deliveries", "/api/modder/hooks/test"):
        assert route in paths


def test_a_burst_from_another_process_arrives_complete_and_in_order(api, live_server):  # noqa: F811
    """Events committed together reach the socket as one batch of frames: none lost, none reordered."""
    from comfyvn.hooks import emit
    from comfyvn.store.db import Database

    sizes = [0, 1000, 70_000]  # frames with 16-bit and 64-bit payload lengths
    with api.subscribe(["on_modder_test"]) as sub:
        db = Database(live_server.env.get("COMFYVN_STORE_URL") or live_server.ws.db_path)  # as a kernel writes
        try:
            with db.transaction() as conn:
                ids = [emit(conn, "on_modder_test", {"message": f"burst {i}", "blob": "x" * sizes[i % 3]})["id"]
                       for i in range(400)]
        finally:
            db.close()
        got = [sub.recv(timeout=30) for _ in ids]
    assert [e["id"] for e in got] == ids
    assert [e["data"]["message"] for e in got] == [f"burst {i}" for i in range(400)]
    assert [len(e["data"]["blob"]) for e in got] == [sizes[i % 3] for i in range(400)]
