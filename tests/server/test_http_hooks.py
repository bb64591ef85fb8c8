"""/api/modder/hooks*: discovery, history, the test event, the WebSocket protocol (subscribe,
filter, resume, unknown topics, pings) and signed webhooks delivered by the extension."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from server_helpers import assert_error

from comfyvn.config import update_config
from comfyvn.hooks import HOOK_SPECS
from comfyvn.hooks.webhooks import verify


async def recv(conn, timeout: float = 20) -> dict:
    text = await asyncio.wait_for(conn.read_message(), timeout)
    assert text is not None, "the socket was closed"
    return json.loads(text)


async def recv_type(conn, kind: str, timeout: float = 20) -> dict:
    """The next message of ``kind``, skipping keep-alive pings."""
    while True:
        msg = await recv(conn, timeout)
        if msg["type"] != "ping" or kind == "ping":
            assert msg["type"] == kind, msg
            return msg


async def test_discovery_lists_every_hook_with_payload_descriptors(api):
    r = await api("GET", "/api/modder/hooks")
    assert r.code == 200
    hooks = {h["name"]: h for h in r.json["hooks"]}
    assert set(hooks) == set(HOOK_SPECS)
    for name in ("on_asset_registered", "on_asset_meta_updated", "on_asset_removed", "on_asset_sidecar_written",
                 "on_asset_ingest_enqueued", "on_asset_ingest_applied", "on_asset_ingest_failed"):
        assert {"hook_event", "timestamp", "timestamp_utc"} <= set(hooks[name]["payload"]), name
        assert hooks[name]["payload"]["timestamp"].startswith("float: epoch seconds"), name
    assert "sidecar" in hooks["on_asset_meta_updated"]["payload"] and hooks["on_asset_removed"]["category"] == "asset"
    assert r.json["websocket"] == ["/api/modder/hooks/ws", "/api/modder/hooks/stream"]
    ingest = (await api("GET", "/api/modder/hooks", params={"category": "ingest"})).json["hooks"]
    assert {h["name"] for h in ingest} == {n for n, s in HOOK_SPECS.items() if s.category == "ingest"}
    assert_error(await api("GET", "/api/modder/hooks", params={"category": "audio"}), 400, "invalid_parameter")


async def test_test_event_and_history(api, make_png):
    r = await api("POST", "/api/modder/hooks/test", body={"message": "hello", "data": {"n": 1}})
    assert r.code == 201, r.body
    env = r.json
    assert env["event"] == "on_modder_test" and env["data"]["message"] == "hello" and env["data"]["n"] == 1
    assert env["data"]["hook_event"] == "modder_test" and env["data"]["timestamp_utc"].endswith("Z")
    assert env["data"]["timestamp"] == env["ts"]  # epoch seconds, as the original's payloads
    default = (await api("POST", "/api/modder/hooks/test")).json
    assert default["data"]["message"] == "comfyvn modder hook test"
    await api("POST", "/assets/register", body={"path": str(make_png()), "asset_type": "images"})

    items = (await api("GET", "/api/modder/hooks/history", params={"limit": "2"})).json["items"]
    assert [x["event"] for x in items] == ["on_asset_saved", "on_asset_sidecar_written"]  # newest 2, oldest first
    tests = (await api("GET", "/api/modder/hooks/history", params={"topics": "on_modder_test"})).json
    assert [x["id"] for x in tests["items"]] == [env["id"], default["id"]] and tests["topics"] == ["on_modder_test"]
    assets = (await api("GET", "/api/modder/hooks/history", params={"topics": "modder.on_asset_*"})).json["items"]
    assert {x["event"] for x in assets} == {"on_asset_registered", "on_asset_saved", "on_asset_sidecar_written"}
    older = (await api("GET", "/api/modder/hooks/history", params={"before_id": str(default["id"])})).json["items"]
    assert [x["id"] for x in older] == [env["id"]]
    assert_error(await api("GET", "/api/modder/hooks/history", params={"topics": "on_nothing"}), 400,
                 "unknown_hook", "on_nothing")
    assert_error(await api("GET", "/api/modder/hooks/history", params={"limit": "0"}), 400, "invalid_parameter")
    assert_error(await api("POST", "/api/modder/hooks/test", body={"message": 5}), 400, "invalid_body", "message")
    assert_error(await api("POST", "/api/modder/hooks/test", body={"topic": "x"}), 400, "invalid_body", "topic")


async def test_ws_subscribe_filters_and_streams_envelopes(api, jp_ws_fetch, make_png):
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws")
    first = await recv_type(conn, "ack")  # a plain connection is subscribed to everything from now
    assert first["topics"] is None
    conn.write_message(json.dumps({"topics": ["on_asset_registered", "modder.on_modder_test"]}))
    ack = await recv_type(conn, "ack")
    assert ack["topics"] == ["on_asset_registered", "on_modder_test"] and ack["last_event_id"] == first["last_event_id"]

    reg = await api("POST", "/assets/register", body={"path": str(make_png()), "asset_type": "images"})
    sent = (await api("POST", "/api/modder/hooks/test", body={"message": "ws"})).json
    registered = await recv_type(conn, "event")
    assert registered["event"] == "on_asset_registered" and registered["data"]["uid"] == reg.json["uid"]
    assert {"id", "event", "ts", "data"} <= set(registered) and registered["data"]["hook_event"] == "asset_registered"
    test_event = await recv_type(conn, "event")
    assert (test_event["id"], test_event["data"]["message"]) == (sent["id"], "ws")  # saved/sidecar filtered out
    assert test_event["id"] > registered["id"]
    conn.close()


async def test_ws_resume_from_last_event_id_without_gap_or_duplicate(api, jp_ws_fetch):
    conn = await jp_ws_fetch("api", "modder", "hooks", "stream", params={"topics": "on_modder_test"})
    await recv_type(conn, "ack")
    ids = [(await api("POST", "/api/modder/hooks/test", body={"message": f"m{i}"})).json["id"] for i in range(3)]
    seen = [(await recv_type(conn, "event"))["id"] for _ in range(2)]
    assert seen == ids[:2]
    conn.close()  # the client drops after the second event ...
    missed = ids[2:] + [(await api("POST", "/api/modder/hooks/test", body={"message": f"late{i}"})).json["id"]
                        for i in range(3)]
    conn = await jp_ws_fetch("api", "modder", "hooks", "stream",
                             params={"topics": "on_modder_test", "last_event_id": str(seen[-1])})
    ack = await recv_type(conn, "ack")
    assert ack["last_event_id"] == seen[-1] and ack["topics"] == ["on_modder_test"]
    got = [(await recv_type(conn, "event"))["id"] for _ in range(len(missed))]
    assert got == missed  # ... and gets exactly what it missed, in order
    live = (await api("POST", "/api/modder/hooks/test", body={"message": "live"})).json["id"]
    assert (await recv_type(conn, "event"))["id"] == live

    # a new filter on the same socket continues from where the client is, by message
    conn.write_message(json.dumps({"topics": ["on_asset_*"], "last_event_id": ids[0]}))
    ack = await recv_type(conn, "ack")
    assert ack["last_event_id"] == ids[0] and "on_asset_registered" in ack["topics"]
    conn.write_message(json.dumps({"topics": ["on_modder_test"], "last_event_id": ids[0]}))
    await recv_type(conn, "ack")
    replay = [(await recv_type(conn, "event"))["id"] for _ in range(len(ids) - 1 + 3 + 1)]
    assert replay == [*ids[1:], *missed[1:], live]
    conn.close()


async def test_ws_resume_across_pruned_events_says_what_was_missed(api, jp_ws_fetch, ws):
    from comfyvn.hooks import prune_events
    from comfyvn.store import open_store

    ids = [(await api("POST", "/api/modder/hooks/test", body={"message": f"m{i}"})).json["id"] for i in range(4)]
    db = open_store(ws)
    with db.transaction() as conn:  # everything up to ids[2] is older than the retention period
        conn.execute("UPDATE events SET ts = 0 WHERE id <= ?", (ids[2],))
    assert prune_events(db, keep_last=1, max_age_s=86400) >= 3
    conn = await jp_ws_fetch("api", "modder", "hooks", "stream",
                             params={"topics": "on_modder_test", "last_event_id": str(ids[0])})
    ack = await recv_type(conn, "ack")
    assert ack["last_event_id"] == ids[0]
    assert (ack["missed"]["first_id"], ack["missed"]["last_id"]) == (ids[0] + 1, ids[3] - 1)
    assert "hooks.history_retention_days" in ack["missed"]["message"]
    assert (await recv_type(conn, "event"))["id"] == ids[3]  # what is left still arrives
    conn.close()
    conn = await jp_ws_fetch("api", "modder", "hooks", "stream", params={"last_event_id": str(ids[3] - 1)})
    assert "missed" not in await recv_type(conn, "ack")  # not behind the log: nothing was missed
    conn.close()


async def test_ws_errors_keep_the_socket_usable(api, jp_ws_fetch):
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws", params={"topics": "on_nothing"})
    err = await recv_type(conn, "error")
    assert "on_nothing" in err["message"] and "known hooks" in err["message"]
    for bad, word in [("not json", "JSON"), ("[1]", "JSON objects"), ('{"topics": ["on_nope"]}', "on_nope"),
                      ('{"topics": "on_modder_test"}', "list"), ('{"last_event_id": -1}', "last_event_id"),
                      ('{"last_event_id": "x"}', "last_event_id"), ('{"type": "unsubscribe"}', "unknown message"),
                      ('{"topic": ["on_modder_test"]}', "unknown field")]:
        conn.write_message(bad)
        msg = await recv_type(conn, "error")
        assert word in msg["message"], (bad, msg)
    conn.write_message(json.dumps({"type": "ping"}))
    assert (await recv_type(conn, "pong"))["type"] == "pong"
    conn.write_message(json.dumps({"type": "subscribe", "topics": ["on_modder_test"]}))
    await recv_type(conn, "ack")
    sent = (await api("POST", "/api/modder/hooks/test")).json
    assert (await recv_type(conn, "event"))["id"] == sent["id"]
    conn.close()


@pytest.mark.comfyvn(ws_ping_seconds=0.1)
async def test_ws_keepalive_pings(jp_ws_fetch):
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws")
    ack = await recv_type(conn, "ack")
    ping = await recv_type(conn, "ping")
    assert ping["last_event_id"] == ack["last_event_id"] and isinstance(ping["ts"], float)
    conn.close()


class Receiver:
    """A local webhook receiver: checks every signature, fails the first ``failures`` calls."""

    def __init__(self, secret: str, failures: int) -> None:
        self.secret, self.failures, self.calls = secret, failures, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(outer.secret, self.headers["X-Comfyvn-Timestamp"], body,
                            self.headers["X-Comfyvn-Signature"])
                outer.calls.append({"headers": dict(self.headers), "body": json.loads(body), "valid": ok})
                status = 401 if not ok else (500 if len(outer.calls) <= outer.failures else 200)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_webhooks_are_signed_retried_and_logged(api, ws):
    update_config({"hooks": {"allow_private_webhook_targets": True, "webhook_backoff_s": 0.05}}, ws)
    receiver = Receiver("s3cret", failures=2)
    try:
        r = await api("POST", "/api/modder/hooks/webhooks",
                      body={"event": "on_modder_test", "url": receiver.url, "secret": "s3cret"})
        assert r.code == 201, r.body
        hook = r.json
        assert hook["has_secret"] is True and hook["event"] == "on_modder_test" and b"s3cret" not in r.body
        listed = await api("GET", "/api/modder/hooks/webhooks")
        assert [h["id"] for h in listed.json["items"]] == [hook["id"]] and b"s3cret" not in listed.body
        one = await api("GET", f"/api/modder/hooks/webhooks/{hook['id']}")
        assert one.json["url"] == receiver.url and b"s3cret" not in one.body
        assert (await api("GET", "/api/modder/hooks/webhooks", params={"event": "on_asset_removed"})).json == {
            "items": []}

        sent = (await api("POST", "/api/modder/hooks/test", body={"message": "to the webhook"})).json
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        while True:
            deliveries = (await api("GET", f"/api/modder/hooks/webhooks/{hook['id']}/deliveries")).json["items"]
            if any(d["ok"] for d in deliveries) or loop.time() > end:
                break
            await asyncio.sleep(0.05)
        assert [(d["attempt"], d["ok"], d["status_code"]) for d in deliveries] == [(3, True, 200), (2, False, 500),
                                                                                     (1, False, 500)]
        assert all(c["valid"] for c in receiver.calls) and len(receiver.calls) == 3
        assert {c["headers"]["X-Comfyvn-Delivery"] for c in receiver.calls} == {deliveries[0]["delivery_id"]}
        assert receiver.calls[-1]["body"]["id"] == sent["id"]
        assert receiver.calls[-1]["body"]["data"]["message"] == "to the webhook"
        limited = (await api("GET", f"/api/modder/hooks/webhooks/{hook['id']}/deliveries", params={"limit": "1"}))
        assert len(limited.json["items"]) == 1

        r = await api("DELETE", f"/api/modder/hooks/webhooks/{hook['id']}")
        assert r.code == 200 and r.json == {"deleted": hook["id"]}
        assert_error(await api("GET", f"/api/modder/hooks/webhooks/{hook['id']}"), 404, "webhook_not_found")
        assert_error(await api("DELETE", f"/api/modder/hooks/webhooks/{hook['id']}"), 404, "webhook_not_found")
        assert_error(await api("GET", f"/api/modder/hooks/webhooks/{hook['id']}/deliveries"), 404,
                     "webhook_not_found")
    finally:
        receiver.close()

    assert_error(await api("POST", "/api/modder/hooks/webhooks", body={"event": "on_nope", "url": receiver.url}),
                 400, "invalid_request", "on_nope")
    assert_error(await api("POST", "/api/modder/hooks/webhooks", body={"event": "*", "url": "ftp://x"}),
                 400, "invalid_request")
    assert_error(await api("POST", "/api/modder/hooks/webhooks", body={"event": "*"}), 400, "invalid_body", "url")
    assert_error(await api("POST", "/api/modder/hooks/webhooks", body={"event": "*", "url": receiver.url,
                                                                        "secret": 12}), 400, "invalid_body", "secret")
