"""Hostile hook clients stay bounded: WebSockets that never read (live and replaying from event 0),
big history pages, forged test-event fields and cursors of the wrong shape."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
import threading
import time

import pytest
from server_helpers import assert_error

from comfyvn.config import update_config
from comfyvn.hooks import emit, get_hook_bus
from comfyvn.store import open_store

BIG = 256 * 1024


def emit_big(ws, n: int, size: int = BIG) -> list[int]:
    db = open_store(ws)
    ids = []
    for i in range(n):
        with db.transaction() as conn:
            ids.append(emit(conn, "on_modder_test", {"message": f"big {i}", "blob": "x" * size})["id"])
    get_hook_bus(db).poke()
    return ids


class RawWs:
    """A WebSocket client on a socket with a 4 KiB receive buffer that reads nothing until told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str, headers: dict[str, str]) -> RawWs:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # a small reader limit: asyncio stops taking bytes from the socket past 2 x limit unread
        reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def read_all(self, timeout: float = 60) -> tuple[list[dict], tuple[int, str] | None]:
        """Every message until the server's close frame: (messages, (code, reason)) or (messages, None) at EOF."""
        messages: list[dict] = []
        while True:
            try:
                b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            except asyncio.IncompleteReadError:
                return messages, None
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
            opcode = b0 & 0x0F
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return messages, (code, payload[2:].decode())
            if opcode == 1:
                messages.append(json.loads(payload))

    async def read_events(self, count: int, timeout: float = 60) -> list[dict]:
        """The next ``count`` event messages (reads frame by frame; no close expected)."""
        events: list[dict] = []
        while len(events) < count:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(n), timeout)
            assert b0 & 0x0F == 1, f"unexpected frame opcode {b0 & 0x0F}: {payload[:80]!r}"
            msg = json.loads(payload)
            if msg["type"] == "event":
                events.append(msg)
        return events

    async def read_ack(self, timeout: float = 20) -> dict:
        """The subscription's ack (the first message): after it, the client is subscribed."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert b0 & 0x0F == 1 and b1 & 0x7F < 126
        msg = json.loads(await self.reader.readexactly(b1 & 0x7F))
        assert msg["type"] == "ack", msg
        return msg

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def raw_ws(http_server_client, jp_http_port, jp_base_url, jp_auth_header):  # the client starts the server
    made: list[RawWs] = []

    async def connect(query: str = "") -> RawWs:
        path = f"{jp_base_url}api/modder/hooks/ws" + (f"?{query}" if query else "")
        client = await RawWs.connect(jp_http_port, path, dict(jp_auth_header))
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()


async def settle(predicate, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- WebSocket backlogs
async def test_twenty_non_reading_clients_are_closed_at_the_byte_limit_and_resume(ws, raw_ws, jp_ws_fetch):
    """20 sockets that never read while 8 MiB of events are published: no client ever has more than
    the limit (+ one event) queued in the server; each, its backlog left unread for
    hooks.ws_stall_timeout_s, is closed 4008 with its resume point."""
    from comfyvn_server_ext.handlers import hooks

    limit = 512 * 1024
    update_config({"hooks": {"ws_max_backlog_bytes": limit, "ws_stall_timeout_s": 1}}, ws)
    hooks.reset_stream_stats()
    clients = [await raw_ws() for _ in range(20)]
    for client in clients:
        await client.read_ack()
    await settle(lambda: all(h._sub is not None for h in list(hooks._live_streams) if not h._closed))
    ids = await asyncio.to_thread(emit_big, ws, 32)
    await settle(lambda: hooks.stream_stats()["closed_too_slow"] >= 20)
    stats = hooks.stream_stats()
    assert stats["peak_client_buffered_bytes"] <= limit + BIG + 1024, stats
    # read them all at once: the server waits 5 s for a close reply, then drops the connection
    closes = []
    for messages, close in await asyncio.gather(*(client.read_all() for client in clients)):
        got = [m["id"] for m in messages if m["type"] == "event"]
        assert got == ids[:len(got)] and len(got) < len(ids)  # an in-order prefix: it really fell behind
        if close is not None:
            assert close[0] == 4008 and close[1].startswith("too slow; resume from last_event_id="), close
            resume = int(close[1].rsplit("=", 1)[1])
            assert (got[-1] if got else ids[0] - 1) == resume  # every event up to N preceded the close
            closes.append(resume)
    assert closes, "no client read its close frame"
    # resuming from the cursor in the close reason delivers the rest, in order, without a gap
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws", params={"last_event_id": str(closes[0])})
    rest = []
    while len(rest) < len(ids) - (ids.index(closes[0]) + 1 if closes[0] in ids else 0):
        msg = json.loads(await asyncio.wait_for(conn.read_message(), 30))
        if msg["type"] == "event":
            rest.append(msg["id"])
    assert rest == [i for i in ids if i > closes[0]]
    conn.close()


async def test_a_non_reading_replay_from_zero_is_paged_and_stays_bounded(ws, raw_ws):
    """A subscriber replaying 8 MiB of history from event 0 that never reads: the server reads the
    log a page at a time as the socket drains and holds at most about the limit for it."""
    from comfyvn_server_ext.handlers import hooks

    limit = 512 * 1024
    update_config({"hooks": {"ws_max_backlog_bytes": limit}}, ws)
    ids = await asyncio.to_thread(emit_big, ws, 32)
    hooks.reset_stream_stats()
    replayers = [await raw_ws("last_event_id=0&topics=on_modder_test") for _ in range(3)]
    await settle(lambda: hooks.stream_stats()["clients"] >= 3)
    await asyncio.sleep(1.0)  # give the server every chance to over-read
    stats = hooks.stream_stats()
    assert stats["peak_client_buffered_bytes"] <= limit + limit // 4 + BIG + 1024, stats
    assert stats["closed_too_slow"] == 0  # a replay waits for its reader; it is not dropped
    for client in replayers:  # now read: everything arrives, in order, exactly once
        events = await client.read_events(len(ids))
        assert [e["id"] for e in events] == ids
    live = await asyncio.to_thread(emit_big, ws, 1, 10)
    for client in replayers:  # and the replay turned into the live subscription
        assert [e["id"] for e in await client.read_events(1)] == live


def interleave_bus_with_a_write(handler, hold: float = 0.3) -> None:
    """Reproduce what CPU load does by chance: the bus thread queues events for ``handler`` while
    the loop thread is in the middle of writing a batch to the socket.  The bus hands over the
    first event, then waits until the loop is inside a write; that write waits ``hold`` seconds
    while the bus thread hands over the rest."""
    writing = threading.Event()
    sub, stream = handler._sub, handler.ws_connection.stream
    deliver, write = sub.callback, stream.write
    first = [True]

    def deliver_then_wait(env):  # bus thread
        deliver(env)
        if first[0]:
            first[0] = False
            writing.wait(10)

    def write_and_hold(data, *args, **kwargs):  # loop thread
        if not writing.is_set() and len(data) > 1024:
            writing.set()
            time.sleep(hold)
        return write(data, *args, **kwargs)

    sub.callback, stream.write = deliver_then_wait, write_and_hold


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "bus-queues-mid-write"])
async def test_a_reading_client_gets_a_burst_bigger_than_the_limit_complete_and_in_order(ws, jp_ws_fetch, loaded):
    """One commit of 8 MiB of events (16 x the limit) to a client that reads: its backlog fills, it
    reads on from the log as it drains and goes live again; nothing lost, nothing reordered.

    Under CPU load the bus thread queues events while the loop thread is in the middle of writing
    a batch: the batch's bytes must already count, or the backlog ends up over the limit."""
    from comfyvn_server_ext.handlers import hooks

    limit = 512 * 1024
    update_config({"hooks": {"ws_max_backlog_bytes": limit}}, ws)
    hooks.reset_stream_stats()
    earlier = set(hooks._live_streams)  # a previous test's server may not have ended its handlers yet
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws", params={"topics": "on_modder_test"})
    try:
        assert json.loads(await asyncio.wait_for(conn.read_message(), 20))["type"] == "ack"
        [handler] = [h for h in list(hooks._live_streams) if h not in earlier]
        await settle(lambda: handler._sub is not None)
        if loaded:
            interleave_bus_with_a_write(handler)

        def burst() -> list[int]:
            db = open_store(ws)
            with db.transaction() as tx:
                ids = [emit(tx, "on_modder_test", {"message": f"b{i}", "blob": "y" * 100_000})["id"]
                       for i in range(80)]
            get_hook_bus(db).poke()
            return ids

        ids = await asyncio.to_thread(burst)
        got = []
        while len(got) < len(ids):
            msg = json.loads(await asyncio.wait_for(conn.read_message(), 30))
            if msg["type"] == "event":
                got.append(msg["id"])
        assert got == ids
        stats = hooks.stream_stats()
        assert stats["closed_too_slow"] == 0 and stats["peak_client_buffered_bytes"] <= limit + 1024, stats
        live = await asyncio.to_thread(emit_big, ws, 1, 10)  # live again
        while True:
            msg = json.loads(await asyncio.wait_for(conn.read_message(), 30))
            if msg["type"] == "event":
                assert msg["id"] == live[0]
                break
    finally:  # a client left open would count against the next test's hooks.ws_max_clients
        conn.close()


async def test_a_replay_of_events_bigger_than_half_the_limit_waits_instead_of_dropping(ws, raw_ws):
    from comfyvn_server_ext.handlers import hooks

    update_config({"hooks": {"ws_max_backlog_bytes": 256 * 1024}}, ws)
    ids = await asyncio.to_thread(emit_big, ws, 12, 200_000)
    hooks.reset_stream_stats()
    client = await raw_ws("last_event_id=0&topics=on_modder_test")
    await asyncio.sleep(0.5)
    assert hooks.stream_stats()["closed_too_slow"] == 0
    assert [e["id"] for e in await client.read_events(len(ids))] == ids
    assert hooks.stream_stats()["peak_client_buffered_bytes"] <= 256 * 1024


async def test_stream_counters_are_reported(api, raw_ws):
    from comfyvn_server_ext.handlers import hooks

    await raw_ws()
    await settle(lambda: hooks.stream_stats()["clients"] >= 1)
    streams = (await api("GET", "/api/modder/hooks")).json["streams"]
    assert streams["clients"] >= 1 and streams["limit_bytes"] == 4 * 1024 * 1024
    assert {"buffered_bytes", "max_client_buffered_bytes", "closed_too_slow"} <= set(streams)


async def test_hook_websocket_clients_are_capped_per_server(ws, api, raw_ws, http_server_client, jp_http_port,
                                                            jp_base_url, jp_auth_header, jp_serverapp):
    """300-400 non-reading replay sockets held ~1 GB: past hooks.ws_max_clients the handshake is a 503."""
    from comfyvn_server_ext.handlers import hooks

    hooks.reset_stream_stats()
    update_config({"hooks": {"ws_max_clients": 3}}, ws)
    held = [await raw_ws("last_event_id=0") for _ in range(3)]
    path = f"{jp_base_url}api/modder/hooks/ws?last_event_id=0"
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", jp_http_port)
        key = base64.b64encode(os.urandom(16)).decode()
        head = "\r\n".join([f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{jp_http_port}", "Upgrade: websocket",
                             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                             *(f"{k}: {v}" for k, v in dict(jp_auth_header).items())])
        writer.write((head + "\r\n\r\n").encode())
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 503"), status
        length = int(next(line.split(b":", 1)[1] for line in rest.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        body = json.loads(await asyncio.wait_for(reader.readexactly(length), 20))
        writer.close()
        assert body["error"] == "too_many_clients" and "hooks.ws_max_clients" in body["message"]
        assert b"retry-after: 5" in rest.lower()
    streams = (await api("GET", "/api/modder/hooks")).json["streams"]
    assert streams["refused_too_many_clients"] == 2 and streams["max_clients"] == 3 and streams["clients"] == 3
    held[0].close()  # a slot frees when a client leaves
    await settle(lambda: len(hooks.admitted(jp_serverapp.web_app.settings)) < 3)
    await raw_ws()
    assert hooks.stream_stats()["refused_too_many_clients"] == 2


# ---------------------------------------------------------------------------- history pages
async def test_history_pages_by_bytes_with_a_cursor(api, ws):
    update_config({"hooks": {"history_page_bytes": 1_000_000}}, ws)
    ids = await asyncio.to_thread(emit_big, ws, 10, 300_000)
    seen: list[int] = []
    params = {"limit": "10000", "topics": "on_modder_test"}
    pages = 0
    while True:
        page = (await api("GET", "/api/modder/hooks/history", params=params)).json
        pages += 1
        assert 1 <= len(page["items"]) <= 3 and page["page_bytes"] <= 1_000_000, len(page["items"])
        assert page["page_bytes_limit"] == 1_000_000
        seen = [x["id"] for x in page["items"]] + seen
        assert page["items"][-1]["data"]["blob"] == "x" * 300_000
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids and pages == 4


async def test_history_is_serialised_in_a_worker_thread(api, ws, monkeypatch):
    from comfyvn_server_ext.handlers import hooks

    threads: list[str] = []
    real = hooks.history_body

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(hooks, "history_body", spy)
    await asyncio.to_thread(emit_big, ws, 3, 1000)
    replies = await asyncio.gather(*[api("GET", "/api/modder/hooks/history", params={"limit": "10000"})
                                     for _ in range(4)])
    assert all(r.code == 200 and len(r.json["items"]) >= 3 for r in replies)
    assert len(threads) == 4 and all(name.startswith("comfyvn-http") for name in threads), threads


@pytest.mark.parametrize("cursor", ['{"id": 1}', "[1]", "-1", "1.5", "0", "99999999999999999999999", "abc",
                                    "1e3", "true"])
async def test_cursors_of_the_wrong_shape_are_400(api, cursor):
    r = await api("GET", "/api/modder/hooks/history", params={"cursor": cursor})
    assert_error(r, 400, "invalid_parameter", "cursor")


# ---------------------------------------------------------------------------- the test event and WS cursors
@pytest.mark.parametrize("field", ["hook_event", "timestamp", "timestamp_utc", "sent_by", "message"])
async def test_the_test_event_cannot_forge_envelope_fields(api, field):
    r = await api("POST", "/api/modder/hooks/test", body={"data": {field: "forged", "n": 1}})
    assert_error(r, 400, "invalid_body", field)
    ok = (await api("POST", "/api/modder/hooks/test", body={"data": {"n": 1}})).json
    assert ok["data"]["hook_event"] == "modder_test" and ok["data"]["timestamp"] != "forged"


def test_emit_sets_hook_event_and_timestamp_itself(ws):
    db = open_store(ws)
    with db.transaction() as conn:
        env = emit(conn, "on_modder_test", {"hook_event": "asset_removed", "timestamp": "1999-01-01T00:00:00Z"})
    assert env["data"]["hook_event"] == "modder_test" and env["data"]["timestamp"] != "1999-01-01T00:00:00Z"
    stored = json.loads(db.query_one("SELECT data FROM events WHERE id = ?", (env["id"],))["data"])
    assert stored["hook_event"] == "modder_test"


async def test_ws_cursors_of_the_wrong_shape_get_an_error_and_the_bus_keeps_running(api, jp_ws_fetch):
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws", params={"last_event_id": '{"a": 1}'})
    assert "last_event_id" in json.loads(await asyncio.wait_for(conn.read_message(), 20))["message"]
    for bad in ['{"$gt": 1}', "[1]", "1.5", "1e400", str(2**70), "true", '"12abc"', "-3"]:
        conn.write_message(f'{{"last_event_id": {bad}}}')
        while True:
            msg = json.loads(await asyncio.wait_for(conn.read_message(), 20))
            if msg["type"] != "ping":
                break
        assert msg["type"] == "error" and "last_event_id" in msg["message"], (bad, msg)
    conn.write_message(json.dumps({"topics": ["on_modder_test"], "last_event_id": "0"}))
    while json.loads(await asyncio.wait_for(conn.read_message(), 20))["type"] != "ack":
        pass
    sent = (await api("POST", "/api/modder/hooks/test")).json  # the bus tailer still delivers
    while True:
        msg = json.loads(await asyncio.wait_for(conn.read_message(), 20))
        if msg["type"] == "event" and msg["id"] == sent["id"]:
            break
    conn.close()


# ---------------------------------------------------------------------------- keep-alive
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# the mixin's pings as short as a deployment may set them for kernels (ms), ours every 0.2 s
@pytest.mark.serverapp(tornado_settings={"ws_ping_interval": 200, "ws_ping_timeout": 600})
@pytest.mark.comfyvn(ws_ping_seconds=0.2)
async def test_keep_alive_a_reading_client_stays_and_a_stalled_one_is_closed_4008_without_a_ping_timeout(
        ws, raw_ws, jp_ws_fetch):
    """jupyter_server's WebSocketMixin logs "WebSocket ping timeout after N ms" (WARNING) and closes
    with no code when a client has not answered its pings for ws_ping_timeout: a client that
    stopped reading on a quiet stream (the kernel's buffers take our few bytes, so our stall rule
    saw no backlog).  The stream's own keep-alive handles both: a reading client stays connected
    past many ping intervals, a stalled one is closed 4008 with its resume point, no warning."""
    from comfyvn_server_ext.handlers import hooks

    update_config({"hooks": {"ws_stall_timeout_s": 1}}, ws)
    hooks.reset_stream_stats()
    records, logs = _Records(), []
    earlier = set(hooks._live_streams)  # a previous test's server may not have ended its handlers yet
    conn = await jp_ws_fetch("api", "modder", "hooks", "ws")
    try:
        assert json.loads(await asyncio.wait_for(conn.read_message(), 20))["type"] == "ack"
        [reader] = [h for h in list(hooks._live_streams) if h not in earlier]
        logs.append(reader.log)
        reader.log.addHandler(records)
        stalled = await raw_ws()  # never reads: never answers a ping
        await settle(lambda: len([h for h in list(hooks._live_streams) if h not in earlier]) == 2)
        [stalled_handler] = [h for h in list(hooks._live_streams) if h not in earlier and h is not reader]
        assert stalled_handler.log is reader.log  # one server log
        # Tornado's own pinger (which would read the mixin's ms figures as seconds) stays off
        assert reader.ws_connection._ping_coroutine is None
        loop = asyncio.get_running_loop()
        deadline, pings = loop.time() + 4.0, 0  # 20 of our ping intervals, 20 of the mixin's
        while loop.time() < deadline:
            msg = json.loads(await asyncio.wait_for(conn.read_message(), 5))
            assert msg is not None and msg["type"] == "ping", msg
            pings += 1
        assert pings >= 10
        assert not reader._closed and conn.protocol is not None  # the reading client is still there
        assert stalled_handler._closed and hooks.stream_stats()["closed_too_slow"] == 1  # by the stall rule
        messages, close = await stalled.read_all(timeout=20)
        assert close is not None and close[0] == 4008, close
        assert messages[0]["type"] == "ack" and {m["type"] for m in messages[1:]} <= {"ping"}
        assert close[1] == f"too slow; resume from last_event_id={messages[0]['last_event_id']}", close
        warnings = [r.getMessage() for r in records.records if r.levelno >= logging.WARNING]
        assert not warnings, warnings
    finally:
        conn.close()
        for server_log in logs:
            server_log.removeHandler(records)
