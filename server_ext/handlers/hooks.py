"""``/api/modder/hooks*``: hook discovery, history, the WebSocket stream, webhooks, a test event.

WebSocket protocol (``/api/modder/hooks/ws`` and ``/api/modder/hooks/stream``):

* subscribe with ``?topics=a,b&last_event_id=N`` and/or by sending
  ``{"topics": [...], "last_event_id": N}`` at any time (a new message replaces the filter);
* each subscription is acknowledged: ``{"type": "ack", "topics": [...] | null, "last_event_id": N}``
  (plus ``"missed": {"first_id", "last_id", "message"}`` when events after ``N`` have been pruned
  from the log by its retention policy), then every matching event after ``N`` arrives as
  ``{"type": "event", "id", "event", "ts", "data"}`` in commit order;
* ``{"type": "ping", "ts", "last_event_id"}`` every few seconds (plus WebSocket pings); a client
  may send ``{"type": "ping"}`` and gets ``{"type": "pong"}``;
* a bad message or an unknown topic gets ``{"type": "error", "message"}``; the socket stays open
  and the previous subscription stays in force.

Without ``last_event_id`` a subscription starts *now* (or, when it replaces one, where the
client was), so reconnecting with the last id seen resumes without a gap or a duplicate.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from collections import deque
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized, ws_authenticated
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from tornado import web
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from comfyvn.hooks import UnknownHookError, emit, resolve_topics

from .base import ApiError, ComfyvnAPIHandler, JsonErrorsMixin, field

AUTH_RESOURCE = "comfyvn:hooks"
CATEGORIES = ("asset", "ingest", "system")


class HooksBase(ComfyvnAPIHandler):
    auth_resource = AUTH_RESOURCE


class HooksHandler(HooksBase):
    """Every hook the bus carries, with payload descriptors (``?category=asset|ingest|system``)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        category = self.q_str("category", max_len=16)
        if category is not None and category not in CATEGORIES:
            raise ApiError(400, "invalid_parameter", f"category must be one of {', '.join(CATEGORIES)}")
        bus = self.services.bus
        last_id = await self.run(bus.last_id)
        self.reply({"hooks": bus.specs(category), "last_event_id": last_id,
                    "websocket": ["/api/modder/hooks/ws", "/api/modder/hooks/stream"]})


class HistoryHandler(HooksBase):
    """The newest ``limit`` envelopes, oldest first (``?topics=`` filters, ``?before_id=`` pages back)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.q_int("limit", 25, minimum=1, maximum=10_000)
        before_id = self.q_int("before_id", None, minimum=1, maximum=2**62)
        topics = self.q_list("topics")
        items = await self.run(self.services.bus.history, limit, topics, before_id)
        self.reply({"items": items, "topics": resolve_topics(topics)})


class TestEventHandler(HooksBase):
    """``POST /api/modder/hooks/test``: emit an ``on_modder_test`` event (optional ``{"message"}``)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["message", "data"], required=False)
        message = field(body, "message", str, "comfyvn modder hook test")
        extra = field(body, "data", dict, None, nullable=True) or {}
        user = getattr(self.current_user, "username", None)
        db, bus = self.services.db, self.services.bus

        def send() -> dict:
            with db.transaction() as conn:
                env = emit(conn, "on_modder_test", {**extra, "message": message, "sent_by": user})
            bus.poke()
            return env

        self.reply(await self.run(send), 201)


class WebhooksHandler(HooksBase):
    """``GET`` registered webhooks (``?event=``), ``POST {"event", "url", "secret"}`` to add one."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        event = self.q_str("event", max_len=128)
        manager = await self.run(self.services.webhooks)
        self.reply({"items": await self.run(manager.list, event)})

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["event", "url", "secret"])
        event = field(body, "event", str)
        url = field(body, "url", str)
        secret = field(body, "secret", str, None, nullable=True)
        manager = await self.run(self.services.webhooks)
        hook = await self.run(manager.register, event, url, secret)
        await self.run(self.services.dispatcher)
        self.reply(hook, 201)


class WebhookHandler(HooksBase):
    @web.authenticated
    @authorized
    async def get(self, webhook_id: str) -> None:
        manager = await self.run(self.services.webhooks)
        hook = await self.run(manager.get, webhook_id)
        if hook is None:
            raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id!r}")
        self.reply(hook)

    @web.authenticated
    @authorized
    async def delete(self, webhook_id: str) -> None:
        manager = await self.run(self.services.webhooks)
        if not await self.run(manager.delete, webhook_id):
            raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id!r}")
        self.reply({"deleted": webhook_id})


class DeliveriesHandler(HooksBase):
    @web.authenticated
    @authorized
    async def get(self, webhook_id: str) -> None:
        limit = self.q_int("limit", 50, minimum=1, maximum=1000)
        manager = await self.run(self.services.webhooks)
        if await self.run(manager.get, webhook_id) is None:
            raise ApiError(404, "webhook_not_found", f"no webhook {webhook_id!r}")
        self.reply({"webhook_id": webhook_id, "items": await self.run(manager.deliveries, webhook_id, limit)})


_serialised = threading.local()


def event_text(env: dict) -> bytes:
    """The JSON message of an envelope, made once per event for all sockets of a bus thread
    (the bus hands the same envelope object to every subscriber in turn)."""
    if getattr(_serialised, "env", None) is not env:
        _serialised.env = env
        _serialised.text = json.dumps({"type": "event", **env}, ensure_ascii=False, default=str).encode()
    return _serialised.text


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final WebSocket text frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class HookStreamHandler(WebSocketMixin, WebSocketHandler, JsonErrorsMixin, JupyterHandler):
    """The live event stream (see the module docstring for the protocol).

    Events reach a socket in batches: the bus thread queues them and schedules one loop callback,
    which writes every queued event as consecutive frames in a single stream write.  One
    ``write_message`` (a task, a future and a ``send()``) per event per socket cannot keep up
    with 20 sockets at 1,000 events/s (see bench/bench_fanout.py).
    """

    auth_resource = AUTH_RESOURCE

    def initialize(self) -> None:
        self._sub: Any = None
        self._generation = 0
        self._position = 0  # the last event id the client has been sent (or started after)
        self._pending = 0
        self._pinger: PeriodicCallback | None = None
        self._closed = False
        self._outbox: deque[tuple[int, int, bytes]] = deque()  # (generation, event id, JSON) from the bus
        self._flush_scheduled = False

    @property
    def services(self):
        return self.settings["comfyvn_services"]

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        allowed = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "execute",
                                                                   self.auth_resource))
        if not allowed:
            raise web.HTTPError(403, f"not authorized to execute {self.auth_resource}")
        await super().get(*args, **kwargs)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: protocol-level pings
        self.loop = IOLoop.current()
        self._pinger = PeriodicCallback(self._send_ping, self.services.ws_ping_seconds * 1000)
        self._pinger.start()
        request: dict[str, Any] = {}
        if self.get_query_argument("topics", None) is not None:
            request["topics"] = [t for raw in self.get_query_arguments("topics") for t in raw.split(",") if t.strip()]
        if self.get_query_argument("last_event_id", None) not in (None, ""):
            request["last_event_id"] = self.get_query_argument("last_event_id")
        await self._subscribe(request)

    async def on_message(self, message: str | bytes) -> None:
        try:
            request = json.loads(message)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            self._send({"type": "error", "message": f"messages must be JSON objects: {exc}"})
            return
        if not isinstance(request, dict):
            self._send({"type": "error", "message": "messages must be JSON objects"})
            return
        kind = request.pop("type", "subscribe")
        if kind == "ping":
            self._send({"type": "pong", "ts": time.time()})
        elif kind == "subscribe":
            await self._subscribe(request)
        else:
            self._send({"type": "error", "message": f"unknown message type {kind!r}; use subscribe or ping"})

    async def _subscribe(self, request: dict[str, Any]) -> None:
        unknown = sorted(set(request) - {"topics", "last_event_id"})
        if unknown:
            self._send({"type": "error", "message": f"unknown field(s) {', '.join(unknown)}; "
                                                    "send {\"topics\": [...], \"last_event_id\": N}"})
            return
        topics = request.get("topics")
        if topics is not None and (not isinstance(topics, list) or not all(isinstance(t, str) for t in topics)):
            self._send({"type": "error", "message": "topics must be a list of hook names"})
            return
        after = request.get("last_event_id")
        if after is not None:
            try:
                after = int(after)
                if after < 0 or isinstance(request.get("last_event_id"), bool):
                    raise ValueError
            except (TypeError, ValueError):
                self._send({"type": "error", "message": f"last_event_id must be a non-negative integer, "
                                                        f"got {request.get('last_event_id')!r}"})
                return
        try:
            resolved = resolve_topics(topics)
        except UnknownHookError as exc:
            self._send({"type": "error", "message": str(exc)})
            return
        bus = self.services.bus
        ack: dict[str, Any] = {"type": "ack", "topics": resolved}
        if after is None:
            after = self._position if self._sub is not None else await self.loop.run_in_executor(
                self.services.executor, bus.last_id)
        else:
            oldest = await self.loop.run_in_executor(self.services.executor, bus.oldest_id)
            if oldest and after < oldest - 1:  # the client was away longer than the log keeps events
                ack["missed"] = {"first_id": after + 1, "last_id": oldest - 1,
                                 "message": f"events {after + 1}-{oldest - 1} were pruned from the event log "
                                            "(hooks.history_retention_days); resync from the REST API"}
        ack["last_event_id"] = after
        old, self._sub = self._sub, None
        if old is not None:
            old.close()
        self._generation += 1
        generation = self._generation
        self._position = after
        # the ack is queued before the subscription exists, so it precedes every envelope
        self._send(ack)

        def deliver(env: dict) -> None:  # runs on the bus thread
            self._outbox.append((generation, env["id"], event_text(env)))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.add_callback(self._flush_events)

        sub = await self.loop.run_in_executor(self.services.executor, bus.subscribe, deliver, resolved, after)
        if self._closed or generation != self._generation:
            sub.close()
        else:
            self._sub = sub

    def _flush_events(self) -> None:
        """Write every queued event of the current subscription (loop thread)."""
        self._flush_scheduled = False  # cleared first: a later append schedules another flush
        frames: list[bytes] = []
        while self._outbox:
            generation, event_id, text = self._outbox.popleft()
            if self._closed or generation != self._generation or event_id <= self._position:
                continue
            self._position = event_id
            frames.append(text)
        if not frames or self._closed or self.ws_connection is None or self.ws_connection.is_closing():
            return
        if self._too_slow(len(frames)):
            return
        stream = getattr(self.ws_connection, "stream", None)
        if stream is None or getattr(self.ws_connection, "_compressor", None) is not None:
            for text in frames:  # a compressed connection: frames must go through Tornado
                self._write(text.decode())
            return
        try:
            fut = stream.write(b"".join(text_frame(t) for t in frames))
        except StreamClosedError:
            return
        self._pending += len(frames)
        fut.add_done_callback(lambda f, n=len(frames): self._written(f, n))

    def _too_slow(self, more: int) -> bool:
        """Close the socket (1013) when ``more`` messages would overflow what the client has not read yet."""
        if self._pending + more <= self.services.ws_max_pending:
            return False
        self._closed = True
        self.close(1013, f"client too slow; reconnect with last_event_id={self._position}")
        return True

    def _send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message, default=str))

    def _write(self, text: str) -> None:
        if self._closed or self.ws_connection is None:
            return
        if self._too_slow(1):
            return
        try:
            fut = self.write_message(text)
        except WebSocketClosedError:
            return
        self._pending += 1
        fut.add_done_callback(self._written)

    def _written(self, fut, count: int = 1) -> None:
        self._pending -= count
        if not fut.cancelled():
            fut.exception()  # a closed socket is handled by on_close; don't log it as unretrieved

    def _send_ping(self) -> None:
        self._send({"type": "ping", "ts": time.time(), "last_event_id": self._position})

    def on_close(self) -> None:
        self._closed = True
        self._generation += 1
        if self._pinger is not None:
            self._pinger.stop()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
