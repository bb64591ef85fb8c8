"""``/api/modder/hooks*``: hook discovery, history, the WebSocket stream, webhooks, a test event.

WebSocket protocol (``/api/modder/hooks/ws`` and ``/api/modder/hooks/stream``):

* subscribe with ``?topics=a,b&last_event_id=N`` and/or by sending
  ``{"topics": [...], "last_event_id": N}`` at any time (a new message replaces the filter);
* each subscription is acknowledged: ``{"type": "ack", "topics": [...] | null, "last_event_id": N}``
  (plus ``"missed": {"first_id", "last_id", "message"}`` when events after ``N`` have been pruned
  from the log by its retention policy), then every matching event after ``N`` arrives as
  ``{"type": "event", "id", "event", "ts", "data"}`` in commit order;
* ``{"type": "ping", "ts", "last_event_id"}`` every few seconds (plus a WebSocket ping, which
  the client's library answers); a client may send ``{"type": "ping"}`` and gets ``{"type": "pong"}``;
* a bad message or an unknown topic gets ``{"type": "error", "message"}``; the socket stays open
  and the previous subscription stays in force.

Without ``last_event_id`` a subscription starts *now* (or, when it replaces one, where the
client was), so reconnecting with the last id seen resumes without a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import struct
import threading
import time
import weakref
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

from comfyvn.config import get_setting
from comfyvn.hooks import UnknownHookError, emit, resolve_topics

from .base import ApiError, ComfyvnAPIHandler, JsonErrorsMixin, field

AUTH_RESOURCE = "comfyvn:hooks"
log = logging.getLogger("comfyvn.server.hooks")
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
        limit = await self.run(get_setting, "hooks.ws_max_backlog_bytes", DEFAULT_BACKLOG_BYTES, self.services.ws)
        self.reply({"hooks": bus.specs(category), "last_event_id": last_id,
                    "websocket": ["/api/modder/hooks/ws", "/api/modder/hooks/stream"],
                    "streams": {**stream_stats(self.settings), "limit_bytes": limit,
                                "max_clients": await self.run(max_clients_setting, self.services.ws)}})


MAX_EVENT_ID = 2**62
_CURSOR = re.compile(r"[0-9]{1,19}")


def parse_event_id(name: str, value: Any, *, minimum: int = 0) -> int:
    """An event id / cursor from a query string or a JSON message: a non-negative integer (a
    decimal string is accepted).  ValueError with a message a person can act on otherwise."""
    if isinstance(value, str) and _CURSOR.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_EVENT_ID:
        shown = json.dumps(value, default=str)[:80] if not isinstance(value, str) else repr(value[:80])
        raise ValueError(f"{name} must be an event id (an integer from {minimum} to {MAX_EVENT_ID}), got {shown}")
    return value


class HistoryHandler(HooksBase):
    """The newest ``limit`` envelopes, oldest first (``?topics=`` filters, ``?before_id=`` or
    ``?cursor=`` pages back).

    A page also stops before ``hooks.history_page_bytes`` of event data (4 MiB; at least one
    event): ``next_cursor`` then names the next (older) page.  The page's JSON is made in a
    worker thread from the stored event text (nothing is parsed and re-encoded on the loop).
    """

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.q_int("limit", 25, minimum=1, maximum=10_000)
        before_id = self.q_int("before_id", None, minimum=1, maximum=MAX_EVENT_ID)
        raw_cursor = self.get_query_argument("cursor", None)
        if raw_cursor not in (None, ""):
            if before_id is not None:
                raise ApiError(400, "invalid_parameter", "give cursor or before_id, not both")
            try:
                before_id = parse_event_id("cursor", raw_cursor, minimum=1)
            except ValueError as exc:
                raise ApiError(400, "invalid_parameter",
                               f"{exc}; pass the next_cursor value of the previous page") from None
        topics = self.q_list("topics")
        body = await self.run(history_body, self.services, limit, topics, before_id)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


def history_body(services: Any, limit: int, topics: list[str] | None, before_id: int | None) -> str:
    """The whole ``/history`` answer as JSON text (runs in the worker pool, off the loop)."""
    max_bytes = int(get_setting("hooks.history_page_bytes", 4 * 1024 * 1024, services.ws))
    page = services.bus.history_page(limit, topics, before_id, max_bytes=max(1, max_bytes))
    return (f'{{"items":{page["json"]},"topics":{json.dumps(resolve_topics(topics))},'
            f'"next_cursor":{json.dumps(page["next_cursor"])},"page_bytes":{page["bytes"]},'
            f'"page_bytes_limit":{max_bytes}}}')


#: fields of a test event's data that the server sets (hook_event/timestamp: every event; the rest: this one)
RESERVED_TEST_FIELDS = frozenset({"hook_event", "timestamp", "timestamp_utc", "message", "sent_by"})


class TestEventHandler(HooksBase):
    """``POST /api/modder/hooks/test``: emit an ``on_modder_test`` event (optional ``{"message"}``)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["message", "data"], required=False)
        message = field(body, "message", str, "comfyvn modder hook test")
        extra = field(body, "data", dict, None, nullable=True) or {}
        reserved = sorted(set(extra) & RESERVED_TEST_FIELDS)
        if reserved:
            raise ApiError(400, "invalid_body", f"data must not set {', '.join(reserved)}: the server sets "
                                                "these fields of the event")
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


def frame_header(n: int) -> bytes:
    """The header of an unmasked, uncompressed, final WebSocket text frame of ``n`` bytes (RFC 6455 5.2)."""
    if n < 126:
        return struct.pack("!BB", 0x81, n)
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def text_frame(payload: bytes) -> bytes:
    """An unmasked, uncompressed, final WebSocket text frame."""
    return frame_header(len(payload)) + payload


#: close code of a client that fell too far behind (4000-4999: private use, RFC 6455 7.4.2)
CLOSE_TOO_SLOW = 4008
DEFAULT_BACKLOG_BYTES = 4 * 1024 * 1024
DEFAULT_STALL_SECONDS = 30.0
CONTROL_SLACK = 64 * 1024
SHARED_PAYLOAD_BYTES = 2048  # Tornado keeps a view of bigger writes (no copy); smaller ones it copies  # room for control messages (acks, pings, errors) over the limit
_live_streams: weakref.WeakSet[HookStreamHandler] = weakref.WeakSet()
_stream_totals = {"closed_too_slow": 0, "peak_client_buffered_bytes": 0, "refused_too_many_clients": 0}
DEFAULT_MAX_CLIENTS = 64
ADMITTED = "comfyvn_hook_clients"  # application setting: this server's accepted, not yet ended handshakes


def admitted(settings: dict[str, Any]) -> set[HookStreamHandler]:
    """The hook WebSocket handshakes one server accepted and has not ended (its client cap counts
    these).  Per server: a handler another (stopped) server never ended does not take a slot."""
    return settings.setdefault(ADMITTED, set())


def max_clients_setting(ws: Any) -> int:
    """``hooks.ws_max_clients``: hook WebSocket clients one server holds at once."""
    value = get_setting("hooks.ws_max_clients", DEFAULT_MAX_CLIENTS, ws)
    return max(1, int(value)) if isinstance(value, int | float) and not isinstance(value, bool) else DEFAULT_MAX_CLIENTS


def stream_stats(settings: dict[str, Any] | None = None) -> dict[str, int]:
    """The WebSocket clients of this process (of one server: its application ``settings``) and the
    bytes queued for them (nothing blocks)."""
    live = [h for h in list(_live_streams) if not h._closed and (settings is None or h.settings is settings)]
    buffered = [h.buffered_bytes for h in live]
    return {"clients": len(live), "buffered_bytes": sum(buffered), "max_client_buffered_bytes": max(buffered, default=0),
            **_stream_totals}


def reset_stream_stats() -> None:
    _stream_totals.update(closed_too_slow=0, peak_client_buffered_bytes=0, refused_too_many_clients=0)


class HookStreamHandler(WebSocketMixin, WebSocketHandler, JsonErrorsMixin, JupyterHandler):
    """The live event stream (see the module docstring for the protocol).

    Memory per client is bounded by bytes (``hooks.ws_max_backlog_bytes``, 4 MiB): the bytes
    queued for a socket (handed over by the bus, or written to the stream and not yet sent) are
    counted.  Event payloads are written as views of one shared ``bytes`` object per event, so
    200 sockets behind on the same event hold one copy of it, not 200.

    When a live client's backlog is full, the socket leaves the bus and reads on from the event
    log, a page (a quarter of the limit) at a time, each page only once the socket has drained
    below half the limit; it goes live again once it has caught up.  A subscription that starts
    behind the log (an old ``last_event_id``) is replayed the same way.  So a burst bigger than
    the limit reaches a reading client complete and in order, and a client that stops reading
    holds at most about the limit.  A client that leaves its backlog unread for
    ``hooks.ws_stall_timeout_s`` (30 s) is closed with code 4008 and the reason
    ``too slow; resume from last_event_id=N`` (every event up to N precedes the close frame).
    An unanswered WebSocket ping counts as unread backlog: a client that stopped reading a quiet
    stream (whose few bytes the kernel's socket buffers took) is closed the same way.  This is the
    stream's one keep-alive; jupyter_server's (``WebSocketMixin``: "ping timeout" warnings and a
    close without a resume point) and Tornado's are off for it (``ping_interval`` = 0).

    Live events reach a socket in batches: the bus thread queues them and schedules one loop
    callback, which writes every queued event as consecutive frames.  One ``write_message``
    (a task, a future and a ``send()``) per event per socket cannot keep up with 20 sockets at
    1,000 events/s (see bench/bench_fanout.py).
    """

    auth_resource = AUTH_RESOURCE

    def initialize(self) -> None:
        self._sub: Any = None
        self._generation = 0
        self._position = 0  # the last event id the client has been sent (or started after)
        self._pending = 0  # messages written and not yet sent
        self._pinger: PeriodicCallback | None = None
        self._stall_checker: PeriodicCallback | None = None
        self._topics: list[str] | None = None
        self._progress_mark: Any = None  # bytes the stream has sent, at the last stall check
        self._unsent = 0  # bytes the stream held that the kernel had no room for, at the last stall check
        self._last_progress = time.monotonic()
        self._ping_unanswered = False  # a WebSocket ping sent and no pong since
        self.stall_seconds = DEFAULT_STALL_SECONDS
        self._closed = False
        self._lock = threading.Lock()  # guards the outbox and the byte counts (bus thread + loop)
        self._outbox: deque[tuple[int, int, bytes]] = deque()  # (generation, event id, JSON) from the bus
        self._outbox_bytes = 0
        self._stream_bytes = 0  # written to the stream, not yet sent
        self._overflow = False  # the bus had more for us than the limit allows
        self._flush_scheduled = False
        self._drained = asyncio.Event()
        self.limit_bytes = DEFAULT_BACKLOG_BYTES
        self.peak_buffered_bytes = 0
        self._task: asyncio.Future | None = None

    @property
    def services(self):
        return self.settings["comfyvn_services"]

    @property
    def buffered_bytes(self) -> int:
        """Bytes queued for this client and not yet handed to the kernel."""
        return self._outbox_bytes + self._stream_bytes

    @property
    def ping_interval(self) -> int:
        """0: neither WebSocketMixin's pinger (its interval in ms shadows Tornado's, in seconds)
        nor Tornado's runs for this stream; ``_send_ping`` and ``_check_stall`` keep it alive."""
        return 0

    @ws_authenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        allowed = await ensure_async(self.authorizer.is_authorized(self, self.current_user, "execute",
                                                                   self.auth_resource))
        if not allowed:
            raise web.HTTPError(403, f"not authorized to execute {self.auth_resource}")
        # Refused before the upgrade (a plain 503 + JSON + Retry-After): no socket, buffer or
        # subscription is ever made for a client over the cap, and every HTTP client can read why.
        limit = await IOLoop.current().run_in_executor(self.services.executor, max_clients_setting, self.services.ws)
        clients = admitted(self.settings)
        if len(clients) >= limit:
            _stream_totals["refused_too_many_clients"] += 1
            raise ApiError(503, "too_many_clients", f"this server already holds {limit} hook WebSocket clients "
                           "(hooks.ws_max_clients); try again later", {"Retry-After": "5"})
        clients.add(self)  # checked and taken with no await in between: the cap is exact
        try:
            await super().get(*args, **kwargs)  # returns when the connection has ended
        finally:
            clients.discard(self)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        super().open(*args, **kwargs)  # WebSocketMixin: protocol-level pings
        self.loop = IOLoop.current()
        _live_streams.add(self)
        self.limit_bytes, self.stall_seconds = await self.loop.run_in_executor(self.services.executor,
                                                                               self._read_limits)
        self._pinger = PeriodicCallback(self._send_ping, self.services.ws_ping_seconds * 1000)
        self._pinger.start()
        self._stall_checker = PeriodicCallback(self._check_stall, min(1000, self.stall_seconds * 500))
        self._stall_checker.start()
        request: dict[str, Any] = {}
        if self.get_query_argument("topics", None) is not None:
            request["topics"] = [t for raw in self.get_query_arguments("topics") for t in raw.split(",") if t.strip()]
        if self.get_query_argument("last_event_id", None) not in (None, ""):
            request["last_event_id"] = self.get_query_argument("last_event_id")
        await self._subscribe(request)

    def _read_limits(self) -> tuple[int, float]:
        ws = self.services.ws
        value = get_setting("hooks.ws_max_backlog_bytes", DEFAULT_BACKLOG_BYTES, ws)
        limit = max(64 * 1024, int(value)) if isinstance(value, int | float) else DEFAULT_BACKLOG_BYTES
        stall = get_setting("hooks.ws_stall_timeout_s", DEFAULT_STALL_SECONDS, ws)
        return limit, max(0.2, float(stall)) if isinstance(stall, int | float) else DEFAULT_STALL_SECONDS

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
                after = parse_event_id("last_event_id", after)
            except ValueError as exc:
                self._send({"type": "error", "message": str(exc)})
                return
        try:
            resolved = resolve_topics(topics)
        except UnknownHookError as exc:
            self._send({"type": "error", "message": str(exc)})
            return
        bus, executor = self.services.bus, self.services.executor
        ack: dict[str, Any] = {"type": "ack", "topics": resolved}
        last = await self.loop.run_in_executor(executor, bus.last_id)
        if after is None:
            after = self._position if self._generation else last
        else:
            oldest = await self.loop.run_in_executor(executor, bus.oldest_id)
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
        self._topics = resolved
        # the ack is queued before any envelope of this subscription, so it precedes them all
        self._send(ack)
        # in a task: a coroutine on_message would stop Tornado reading this socket until it ends
        self._task = asyncio.ensure_future(self._follow(generation, resolved, replay=after < last))

    async def _follow(self, generation: int, topics: list[str] | None, *, replay: bool) -> None:
        try:
            if replay:
                await self._replay(generation, topics)
            if not self._closed and generation == self._generation:
                await self._subscribe_live(generation, topics)
        except Exception:
            log.exception("hook stream: following the event log failed")
            self._closed = True
            self.close(1011, "server error while following the event log")

    async def _replay(self, generation: int, topics: list[str] | None) -> None:
        """Send the events after the position from the log, a page at a time as the socket drains."""
        page_bytes = max(16 * 1024, self.limit_bytes // 4)
        low_water = self.limit_bytes // 2
        while not self._closed and generation == self._generation:
            await self._wait_until(lambda: self.buffered_bytes <= low_water)
            if self._closed or generation != self._generation:
                return
            page = await self.loop.run_in_executor(self.services.executor, functools.partial(
                self.services.bus.event_messages, self._position, topics, max_bytes=page_bytes))
            if not page or self._closed or generation != self._generation:
                return
            size = sum(len(text) for _, text in page)  # one event may be bigger than a page
            await self._wait_until(lambda n=size: not self.buffered_bytes or self.buffered_bytes + n <= self.limit_bytes)
            if self._closed or generation != self._generation:
                return
            self._write_events(page)  # if a control message took the room meanwhile: re-read, re-wait

    async def _wait_until(self, ready) -> None:
        """Wait (without polling) until ``ready()`` or the socket closed; writes completing wake it."""
        while not self._closed and not ready():
            self._drained.clear()
            await self._drained.wait()

    async def _subscribe_live(self, generation: int, topics: list[str] | None) -> None:
        def deliver(env: dict) -> None:  # runs on the bus thread
            text = event_text(env)
            with self._lock:
                if self._overflow or generation != self._generation:
                    return
                backlog = self._outbox_bytes + self._stream_bytes
                if backlog and backlog + len(text) > self.limit_bytes:
                    self._overflow = True  # flush switches to reading the log; nothing more is queued
                else:
                    self._outbox.append((generation, env["id"], text))
                    self._outbox_bytes += len(text)
                if self._flush_scheduled:
                    return
                self._flush_scheduled = True
            self.loop.add_callback(self._flush_events)

        with self._lock:
            self._overflow = False
        sub = await self.loop.run_in_executor(self.services.executor, self.services.bus.subscribe, deliver, topics,
                                              self._position)
        if self._closed or generation != self._generation:
            sub.close()
        else:
            self._sub = sub

    def _flush_events(self) -> None:
        """Write every queued event of the current subscription (loop thread)."""
        with self._lock:
            self._flush_scheduled = False  # cleared first: a later append schedules another flush
            queued, self._outbox = self._outbox, deque()
            self._outbox_bytes = 0
            overflow = self._overflow
        events = [(event_id, text) for generation, event_id, text in queued
                  if generation == self._generation and event_id > self._position]
        if events and not self._closed and not self._write_events(events):
            overflow = True  # control messages took the room meanwhile: read these from the log
        if overflow and not self._closed:
            self._catch_up()

    def _catch_up(self) -> None:
        """The live backlog is full: drop the bus subscription and read on from the log, a page at
        a time as the socket drains (then live again).  Nothing is lost: the position only moves
        when an event is written."""
        sub, self._sub = self._sub, None
        if sub is not None:
            sub.close()
        self._generation += 1  # deliveries still on their way from the bus are ignored
        self._task = asyncio.ensure_future(self._follow(self._generation, self._topics, replay=True))

    def _check_stall(self) -> None:
        """Close (4008) a client that has left its backlog (or our last ping) unread for
        ``hooks.ws_stall_timeout_s``.

        The client is reading when it answered a ping (``on_pong``) or when the kernel took more
        bytes while it had no room for all of them (the stream held unsent bytes at the last check):
        with room, the kernel takes our bytes whether the client reads or not."""
        if self._closed:
            return
        stream = getattr(self.ws_connection, "stream", None)
        mark = getattr(stream, "_total_write_done_index", None)  # bytes the kernel has taken so far
        handed = getattr(stream, "_total_write_index", None)  # bytes handed to the stream so far
        kernel_was_full = self._unsent > 0
        self._unsent = handed - mark if mark is not None and handed is not None else 0
        now = time.monotonic()
        if mark is None or not (self.buffered_bytes or self._ping_unanswered) or \
                (kernel_was_full and mark != self._progress_mark):
            self._last_progress = now
        elif now - self._last_progress > self.stall_seconds:
            self._close_too_slow()
        self._progress_mark = mark

    def _write_events(self, events: list[tuple[int, bytes]]) -> bool:
        """Write event messages as frames: a small header plus a view of the shared payload each.

        False (and nothing written, the position unchanged) when they do not fit in the backlog
        now: the caller reads them from the log later."""
        if self._closed or self.ws_connection is None or self.ws_connection.is_closing():
            return True
        size = sum(len(text) for _, text in events)
        if not self._reserve(size, len(events)):
            return False
        self._position = events[-1][0]
        stream = getattr(self.ws_connection, "stream", None)
        if stream is None or getattr(self.ws_connection, "_compressor", None) is not None:
            for i, (_, text) in enumerate(events):  # a compressed connection: frames must go through Tornado
                try:
                    fut = self.write_message(text.decode())
                except WebSocketClosedError:
                    self._release(sum(len(t) for _, t in events[i:]), len(events) - i)
                    return True
                fut.add_done_callback(functools.partial(self._written, size=len(text), count=1))
            return True
        try:
            small = bytearray()
            for _, text in events:
                if len(text) > SHARED_PAYLOAD_BYTES:  # header now, then a view of the shared payload
                    stream.write(bytes(small) + frame_header(len(text)))
                    stream.write(text)
                    small = bytearray()
                else:  # small frames are copied anyway: gather them into one write
                    small += frame_header(len(text))
                    small += text
            fut = stream.write(bytes(small))  # futures resolve in order: the last one covers the batch
        except StreamClosedError:
            self._release(size, len(events))
            return True
        fut.add_done_callback(functools.partial(self._written, size=size, count=len(events)))
        return True

    def _reserve(self, size: int, count: int, *, slack: int = 0) -> bool:
        """Count ``size`` bytes (``count`` messages) as queued for the client if they fit in what it
        has not read yet (one message always fits a socket with nothing queued); False otherwise.

        Checked and counted under the lock, before the write: the bus thread, queueing events
        meanwhile (the write of a big batch releases the GIL), sees these bytes, so the backlog
        never ends up over the limit."""
        with self._lock:
            backlog = self._outbox_bytes + self._stream_bytes
            if (backlog and backlog + size > self.limit_bytes + slack) or \
                    self._pending + count > self.services.ws_max_pending:
                return False
            self._stream_bytes += size
            self._pending += count
            buffered = backlog + size
        if buffered > self.peak_buffered_bytes:
            self.peak_buffered_bytes = buffered
            if buffered > _stream_totals["peak_client_buffered_bytes"]:
                _stream_totals["peak_client_buffered_bytes"] = buffered
        return True

    def _release(self, size: int, count: int) -> None:
        """Un-count reserved bytes that were not written after all (the socket closed)."""
        with self._lock:
            self._stream_bytes -= size
            self._pending -= count
        self._drained.set()

    def _close_too_slow(self) -> None:
        if self._closed:
            return
        self._closed = True
        _stream_totals["closed_too_slow"] += 1
        self._drained.set()
        self.close(CLOSE_TOO_SLOW, f"too slow; resume from last_event_id={self._position}")

    def _send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message, default=str))

    def _write(self, text: str) -> None:
        if self._closed or self.ws_connection is None:
            return
        size = len(text.encode()) if not text.isascii() else len(text)
        if not self._reserve(size, 1, slack=CONTROL_SLACK):  # acks, pings, errors: small, never refused for lag
            self._close_too_slow()  # not even room for a control message: 4008
            return
        try:
            fut = self.write_message(text)
        except WebSocketClosedError:
            self._release(size, 1)
            return
        fut.add_done_callback(functools.partial(self._written, size=size, count=1))

    def _written(self, fut, *, size: int, count: int) -> None:
        with self._lock:
            self._stream_bytes -= size
            self._pending -= count
        self._drained.set()  # wakes a replay waiting for room (it checks its own condition)
        if not fut.cancelled():
            fut.exception()  # a closed socket is handled by on_close; don't log it as unretrieved

    def _send_ping(self) -> None:
        self._send({"type": "ping", "ts": time.time(), "last_event_id": self._position})
        if self._closed or self._ping_unanswered:
            return
        try:
            self.ping(b"")
        except WebSocketClosedError:
            return
        self._ping_unanswered = True

    def on_pong(self, data: bytes) -> None:
        """The client read everything up to our ping: it is reading (progress for ``_check_stall``)."""
        self._ping_unanswered = False
        self._last_progress = time.monotonic()

    def on_close(self) -> None:
        self._closed = True
        self._generation += 1
        self._drained.set()
        for timer in (self._pinger, self._stall_checker):
            if timer is not None:
                timer.stop()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        with self._lock:
            self._outbox.clear()
            self._outbox_bytes = 0
