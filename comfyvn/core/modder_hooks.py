"""The original comfyvn's ``comfyvn.core.modder_hooks`` API, on top of our modder hook bus.

Not a second bus: :func:`emit` writes to the workspace's event log and listeners are fed from
the event log of every database this process uses (the current workspace's, and each one an
:class:`~comfyvn.studio.core.asset_registry.AssetRegistry` opened), so a listener sees every
asset and ingest event of every process, exactly as our bus subscribers do.

* ``register_listener(listener, events=None)`` (the original's order) or
  ``register_listener(event, listener)``; the listener is called as ``listener(event, payload)``.
  Events committed by this process's registries are delivered before the registry call
  returns (as the original did); events of other processes arrive from the bus thread.
* Payloads carry the original's ``timestamp`` as epoch seconds (float) and the same instant as
  ISO-8601 UTC in ``timestamp_utc``, as every bus payload does (events logged before the bus
  used this layout are converted on the way out).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..hooks import HOOK_SPECS as BUS_SPECS
from ..hooks import Subscription, UnknownHookError, get_hook_bus, hook_spec, resolve_topics
from ..hooks.events import emit as emit_event
from ..hooks.events import read_events, utc_timestamp
from ..store import Database, StoreUnavailable, open_store

log = logging.getLogger("comfyvn.core.modder_hooks")

HookListener = Callable[[str, dict[str, Any]], None]

_BYTES_DOC = "int: file size in bytes"


@dataclass(frozen=True)
class HookSpec:
    """A hook as the original described it (``payload_fields``, ``ws_topic``, ``rest_event``)."""

    name: str
    description: str
    payload_fields: dict[str, str]
    ws_topic: str
    rest_event: str
    category: str
    hook_event: str | None
    alias_of: str | None


def _legacy_spec(name: str) -> HookSpec:
    spec = BUS_SPECS[name]
    fields = dict(spec.payload)  # hook_event, timestamp (epoch seconds), timestamp_utc: every spec's
    if spec.hook_event in ("asset_registered", "asset_removed"):
        fields["bytes"] = _BYTES_DOC
    if spec.hook_event == "asset_removed":
        fields["meta"] = "object: the asset's metadata before removal"
    return HookSpec(name=name, description=spec.description, payload_fields=fields, ws_topic=f"modder.{name}",
                    rest_event=name, category=spec.category, hook_event=spec.hook_event, alias_of=spec.alias_of)


HOOK_SPECS: dict[str, HookSpec] = {name: _legacy_spec(name) for name in BUS_SPECS}


def hook_specs() -> dict[str, HookSpec]:
    """The hook specification table (a copy)."""
    return dict(HOOK_SPECS)


def legacy_payload(envelope: dict) -> dict[str, Any]:
    """An envelope's data as the original delivered it: ``timestamp`` in epoch seconds (also for
    an event logged when the bus's ``timestamp`` was the ISO string now in ``timestamp_utc``)."""
    data = dict(envelope["data"])
    data["timestamp"] = float(envelope["ts"])
    data.setdefault("timestamp_utc", utc_timestamp(envelope["ts"]))
    return data


def legacy_envelope(envelope: dict) -> dict[str, Any]:
    return {"id": envelope.get("id"), "event": envelope["event"], "ts": envelope["ts"],
            "data": legacy_payload(envelope)}


class _Feed:
    """Delivers one database's events to the listeners, once each and in commit order, from
    whichever thread gets there first (the bus thread, or a registry call in this process)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = threading.RLock()
        self.cursor = 0
        self.subscription: Subscription | None = None

    def start(self) -> None:
        with self.lock:
            if self.subscription is None:
                bus = get_hook_bus(self.db)
                self.cursor = bus.last_id()
                self.subscription = bus.subscribe(self.deliver, after_id=self.cursor)

    def stop(self) -> None:
        with self.lock:
            if self.subscription is not None:
                self.subscription.close()
                self.subscription = None

    def drain(self) -> None:
        with self.lock:
            if self.subscription is None:
                return
            while True:
                batch = read_events(self.db.conn, after_id=self.cursor, limit=500)
                for env in batch:
                    self.deliver(env)
                if len(batch) < 500:
                    return

    def deliver(self, envelope: dict) -> None:
        with self.lock:
            if self.subscription is None or envelope["id"] <= self.cursor:
                return
            self.cursor = envelope["id"]
            with _lock:
                listeners = list(_listeners.get(envelope["event"], ()))
            if not listeners:
                return
            payload = legacy_payload(envelope)
            for listener in listeners:
                try:
                    listener(envelope["event"], dict(payload))
                except Exception:
                    log.exception("modder hook listener %r failed on %s", listener, envelope["event"])


_lock = threading.RLock()
_listeners: dict[str, list[HookListener]] = {}
_feeds: dict[str, _Feed] = {}


def _default_db() -> Database:
    from ..config import workspace

    ws = workspace()
    ws.ensure()
    return open_store(ws)


def watch_database(db: Database) -> None:
    """Feed this database's events to the listeners too (every AssetRegistry calls it)."""
    with _lock:
        feed = _feeds.get(db.url)
        if feed is None:
            feed = _feeds[db.url] = _Feed(db)
        active = any(_listeners.values())
    if active:
        feed.start()


def deliver_pending(db: Database) -> None:
    """Deliver the events committed so far in ``db`` now, on the caller's thread."""
    feed = _feeds.get(db.url)
    if feed is not None and feed.subscription is not None:
        feed.drain()


def _parse(first: Any, second: Any) -> tuple[HookListener, list[str]]:
    if isinstance(first, str) and callable(second):
        listener, events = second, [first]
    elif callable(first):
        listener = first
        events = [second] if isinstance(second, str) else (list(second) if second is not None else list(BUS_SPECS))
    else:
        raise TypeError("use register_listener(listener, events=None) or register_listener(event, listener)")
    try:
        return listener, resolve_topics(events) or list(BUS_SPECS)
    except UnknownHookError as exc:
        raise ValueError(f"Unsupported modder hook: {exc}") from None


def register_listener(listener_or_event: HookListener | str, events: Iterable[str] | str | HookListener | None = None
                      ) -> None:
    """Call ``listener(event, payload)`` for each event (all of them when ``events`` is None)."""
    listener, names = _parse(listener_or_event, events)
    watch_database(_default_db())
    with _lock:
        for name in names:
            bucket = _listeners.setdefault(name, [])
            if listener not in bucket:
                bucket.append(listener)
        feeds = list(_feeds.values())
    for feed in feeds:
        feed.start()


def unregister_listener(listener_or_event: HookListener | str,
                        events: Iterable[str] | str | HookListener | None = None) -> None:
    """Detach a listener (silently when it is not attached), after delivering what is pending."""
    listener, names = _parse(listener_or_event, events)
    with _lock:
        feeds = list(_feeds.values())
    for feed in feeds:
        feed.drain()
    with _lock:
        for name in names:
            bucket = _listeners.get(name, [])
            if listener in bucket:
                bucket.remove(listener)
        idle = not any(_listeners.values())
    if idle:
        for feed in feeds:
            feed.stop()


def emit(event: str, payload: dict[str, Any]) -> None:
    """Write an event to the current workspace's event log (seen by every process).

    Unknown events raise ``ValueError`` (the original dropped them silently)."""
    try:
        spec = hook_spec(event)
    except UnknownHookError as exc:
        raise ValueError(f"Unsupported modder hook: {exc}") from None
    if not isinstance(payload, dict):
        raise TypeError("payload must be a dict")
    db = _default_db()
    with db.transaction() as conn:
        emit_event(conn, spec.name, payload)
    get_hook_bus(db).poke()
    deliver_pending(db)


def history(limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` envelopes ``{"id", "event", "ts", "data"}`` (oldest first) of the
    workspace's database and every database a registry of this process opened."""
    limit = max(1, int(limit))
    dbs = {db.url: db for db in [_default_db(), *(f.db for f in list(_feeds.values()))]}
    envelopes: list[dict] = []
    for db in dbs.values():
        try:
            envelopes.extend(get_hook_bus(db).history(limit))
        except (sqlite3.Error, StoreUnavailable) as exc:  # a database that went away (a deleted test folder)
            log.warning("modder hook history: skipping %s: %s", db.url, exc)
    envelopes.sort(key=lambda env: env["ts"])
    return [legacy_envelope(env) for env in envelopes[-limit:]]


def listeners() -> dict[str, tuple[HookListener, ...]]:
    """``{event: (listener, ...)}`` attached through this module in this process."""
    with _lock:
        return {name: tuple(cbs) for name, cbs in _listeners.items() if cbs}


__all__ = ["HOOK_SPECS", "HookListener", "HookSpec", "deliver_pending", "emit", "history", "hook_specs",
           "legacy_envelope", "legacy_payload", "listeners", "register_listener", "unregister_listener",
           "watch_database"]
