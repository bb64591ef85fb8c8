"""The registry's hooks: event names, the in-process listener table and the event-log writes.

A change writes its modder envelopes (:meth:`Listeners.emit_all`) inside its own transaction;
after the commit :meth:`Listeners.run` calls the in-process callbacks synchronously and wakes
the hook bus.  The listener table is shared by every registry instance of one (database,
project) in this process (:data:`LISTENERS`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from ..core import modder_hooks
from ..hooks import get_hook_bus
from ..hooks.events import emit_many
from ..store import Database

log = logging.getLogger("comfyvn.studio.core.asset_registry")

HOOK_ASSET_REGISTERED = "asset_registered"
HOOK_ASSET_META_UPDATED = "asset_meta_updated"
HOOK_ASSET_REMOVED = "asset_removed"
HOOK_SIDECAR_WRITTEN = "asset_sidecar_written"
HOOK_EVENTS = (HOOK_ASSET_REGISTERED, HOOK_ASSET_META_UPDATED, HOOK_ASSET_REMOVED, HOOK_SIDECAR_WRITTEN)
MODDER_TOPICS = {
    HOOK_ASSET_REGISTERED: ("on_asset_registered", "on_asset_saved"),
    HOOK_ASSET_META_UPDATED: ("on_asset_meta_updated",),
    HOOK_ASSET_REMOVED: ("on_asset_removed",),
    HOOK_SIDECAR_WRITTEN: ("on_asset_sidecar_written",),
}

Hook = Callable[[dict], None]
HookCall = tuple[str, dict]  # (event, in-process payload)
# listeners are shared by every registry instance of one (database, project) in this process
LISTENERS: dict[tuple[str, str], dict[str, list[Hook]]] = {}
LISTENERS_LOCK = threading.RLock()


def check_event(event: str) -> None:
    """``ValueError`` unless ``event`` is one of :data:`HOOK_EVENTS`."""
    if event not in HOOK_EVENTS:
        raise ValueError(f"unknown registry hook {event!r}; use one of {', '.join(HOOK_EVENTS)}")


class Listeners:
    """The hooks of one project of one database, in this process."""

    def __init__(self, db: Database, project_id: str) -> None:
        self.db = db
        self.project_id = project_id
        self.key = (db.url, project_id)

    def add(self, event: str, callback: Hook) -> None:
        """Attach ``callback`` to ``event`` (attaching the same callback twice attaches it once)."""
        check_event(event)
        if not callable(callback):
            raise TypeError("callback must be callable")
        with LISTENERS_LOCK:
            listeners = LISTENERS.setdefault(self.key, {}).setdefault(event, [])
            if callback not in listeners:
                listeners.append(callback)

    def remove(self, event: str, callback: Hook) -> bool:
        """Detach a callback; False (and nothing raised) when it was not attached."""
        with LISTENERS_LOCK:
            listeners = LISTENERS.get(self.key, {}).get(event, [])
            if callback in listeners:
                listeners.remove(callback)
                return True
        return False

    def snapshot(self, event: str | None = None) -> dict[str, tuple[Hook, ...]]:
        """``{event: (callback, ...)}``: every event, or only ``event`` (``ValueError`` for an unknown one)."""
        if event is not None:
            check_event(event)
        with LISTENERS_LOCK:
            snapshot = {e: tuple(cbs) for e, cbs in LISTENERS.get(self.key, {}).items()}
        return {e: snapshot.get(e, ()) for e in ((event,) if event is not None else HOOK_EVENTS)}

    def run(self, fired: list[HookCall]) -> None:
        """Call the listeners of committed changes (a failing callback is logged) and wake the bus."""
        for event, payload in fired:
            with LISTENERS_LOCK:
                listeners = list(LISTENERS.get(self.key, {}).get(event, []))
            for cb in listeners:
                try:
                    cb(dict(payload))
                except Exception:
                    log.exception("registry hook %r failed for %s", cb, event)
        if fired:
            get_hook_bus(self.db).poke()
            modder_hooks.deliver_pending(self.db)

    def emit(self, conn, event: str, payload: dict, extra: dict | None = None) -> HookCall:
        """Write the modder envelope(s) for ``event`` and return the in-process hook call."""
        return self.emit_all(conn, [(event, payload, extra)])[0]

    def emit_all(self, conn, calls: list[tuple[str, dict, dict | None]]) -> list[HookCall]:
        """Write the modder envelopes of several hook calls in one statement (same transaction)."""
        items: list[tuple[str, dict]] = []
        for event, payload, extra in calls:
            data = {**payload, **(extra or {}), "project_id": self.project_id}
            items.extend((topic, data) for topic in MODDER_TOPICS[event])
        envelopes = emit_many(conn, items, project_id=self.project_id)
        if log.isEnabledFor(logging.DEBUG):
            for env in envelopes:
                log.debug("hook %s %s", env["event"], json.dumps(env["data"], ensure_ascii=False, default=str))
        return [(event, payload) for event, payload, _ in calls]
