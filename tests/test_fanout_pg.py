"""Three real ``jupyter server`` processes on one PostgreSQL store: an asset registered through
server A reaches a WebSocket client of server C (and server B's history), in order, once."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from live_server import TEST_CONFIG, LiveServer, start_live_server
from websockets.sync.client import connect

WAIT = 60  # seconds; a guard against hanging, never a speed assertion


@pytest.fixture(scope="module")
def pg_servers(pg_cluster, tmp_path_factory) -> Iterator[list[LiveServer]]:
    url = pg_cluster.create_database()
    servers: list[LiveServer] = []
    try:
        for name in "abc":
            servers.append(start_live_server(tmp_path_factory.mktemp(f"server_{name}"), config=TEST_CONFIG,
                                             env={"COMFYVN_STORE_URL": url}))
        yield servers
    finally:
        for server in servers:
            server.stop()


def _events(sock, until, what: str) -> list[dict]:
    """Event messages from ``sock`` until ``until(events)`` holds."""
    events: list[dict] = []
    deadline = time.monotonic() + WAIT
    while not until(events):
        left = deadline - time.monotonic()
        assert left > 0, f"{what}: got {[e.get('id') for e in events]}"
        msg = json.loads(sock.recv(timeout=left))
        if msg["type"] == "event":
            events.append(msg)
    return events


def test_a_registration_via_server_a_reaches_a_websocket_client_of_server_c(pg_servers, tmp_path):
    a, b, c = pg_servers
    with connect(c.ws_url("api/modder/hooks/ws") + "?topics=on_asset_registered,on_modder_test",
                 additional_headers=c.headers, open_timeout=30) as sock:
        ack = json.loads(sock.recv(timeout=WAIT))
        assert ack["type"] == "ack"
        src = tmp_path / "hero.png"
        src.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
        asset = a.client().upload_asset(src, "image")
        sent = [b.client().test_event(f"via b {i}")["id"] for i in range(3)]
        events = _events(sock, lambda ev: {e["id"] for e in ev} >= set(sent), "events from A and B")
    registered = [e for e in events if e["event"] == "on_asset_registered"]
    assert [e["data"]["uid"] for e in registered] == [asset["uid"]]
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids))  # in id order, each once
    assert registered[0]["id"] < sent[0]
    history = b.client().history(topics=["on_asset_registered"])
    assert asset["uid"] in [item["data"]["uid"] for item in history["items"]]
