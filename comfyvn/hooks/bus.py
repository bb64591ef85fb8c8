"""The modder hook bus of one process.

Every process that opens a workspace gets one bus (:func:`get_hook_bus`).  A tailer thread
watches the event log (SQLite: the store's change marker, a cheap "did anyone commit?" check,
:class:`~comfyvn.store.base.ChangeWatcher`;
PostgreSQL: woken by ``LISTEN/NOTIFY`` with a slow poll behind it, reconnecting after a server
restart, see :mod:`comfyvn.hooks.pgwake`) and
hands new envelopes, in commit order, to each subscriber whose topics match.  Each
subscription keeps its own cursor (the last event id it saw), so a subscriber can resume
after a reconnect from the id it last saw, without a gap.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..store import Database, get_database, open_store
from ..store.base import ChangeWatcher
from .events import (
    event_messages,
    history_page,
    last_event_id,
    oldest_event_id,
    read_batch,
    read_events,
    recent_events,
)
from .pgwake import tail_postgresql
from .specs import HOOK_SPECS, resolve_topics

log = logging.getLogger("comfyvn.hooks.bus")

Callback = Callable[[dict], None]
#: event data the tailer holds at once (a batch of 500 events of ~1 MB each would be 500 MB)
DISPATCH_BATCH_BYTES = 8 * 1024 * 1024
MAX_EVENT_ID = 2**62


class Subscription:
    _ids = itertools.count(1)

    def __init__(self, bus: ModderHookBus, callback: Callback, topics: list[str] | None, after_id: int) -> None:
        self.id = next(self._ids)
        self.bus = bus
        self.callback = callback
        self.topics = set(topics) if topics else None
        self.cursor = after_id
        self.active = True

    def wants(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics

    def close(self) -> None:
        self.active = False
        self.bus._remove(self)


class ModderHookBus:
    def __init__(self, db: Database, poll_interval: float = 0.025, pg_poll_interval: float = 1.0) -> None:
        self.db = db
        self.poll_interval = poll_interval  # SQLite: how often the change marker is read
        self.pg_poll_interval = pg_poll_interval  # PostgreSQL: the log is read at least this often (NOTIFY lost)
        self._subs: dict[int, Subscription] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------
    @staticmethod
    def specs(category: str | None = None) -> list[dict]:
        return [s.describe() for s in HOOK_SPECS.values() if category is None or s.category == category]

    def history(self, limit: int = 25, topics: list[str] | None = None, before_id: int | None = None) -> list[dict]:
        """The newest ``limit`` envelopes (oldest first), filtered by topic when given."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return recent_events(self.db.conn, limit=min(limit, 10_000), topics=resolve_topics(topics),
                             before_id=before_id)

    def history_page(self, limit: int = 25, topics: list[str] | None = None, before_id: int | None = None, *,
                     max_bytes: int = 4 * 1024 * 1024) -> dict:
        """A byte-bounded page of history as JSON text (see :func:`~comfyvn.hooks.events.history_page`)."""
        if limit < 1 or max_bytes < 1:
            raise ValueError("limit and max_bytes must be at least 1")
        return history_page(self.db.conn, limit=min(limit, 10_000), max_bytes=max_bytes,
                            topics=resolve_topics(topics), before_id=before_id)

    def events_after(self, after_id: int, topics: list[str] | None = None, limit: int = 1000) -> list[dict]:
        return read_events(self.db.conn, after_id=after_id, topics=resolve_topics(topics), limit=limit)

    def event_messages(self, after_id: int, topics: list[str] | None = None, *,
                       max_bytes: int = 1024 * 1024) -> list[tuple[int, bytes]]:
        """A byte-bounded page of stream messages after ``after_id`` (replaying a WebSocket)."""
        return event_messages(self.db.conn, after_id=after_id, max_bytes=max_bytes, topics=resolve_topics(topics))

    def last_id(self) -> int:
        return last_event_id(self.db.conn)

    def oldest_id(self) -> int:
        """The oldest event still in the log (older ones were pruned; 0 when the log is empty)."""
        return oldest_event_id(self.db.conn)

    # -- subscribing -------------------------------------------------------------------
    def subscribe(self, callback: Callback, topics: list[str] | None = None, after_id: int | None = None) -> Subscription:
        """Call ``callback(envelope)`` for each new event (from ``after_id`` when given, else from now).

        Callbacks run on the bus thread: keep them short (hand work to your own loop/queue).
        """
        resolved = resolve_topics(topics)
        if after_id is not None and (isinstance(after_id, bool) or not isinstance(after_id, int)
                                     or not 0 <= after_id <= MAX_EVENT_ID):
            # checked here: a cursor SQLite cannot hold would stop the tailer for every subscriber
            raise ValueError(f"after_id must be an integer from 0 to {MAX_EVENT_ID}, got {after_id!r}")
        sub = Subscription(self, callback, resolved, self.last_id() if after_id is None else after_id)
        with self._lock:
            self._subs[sub.id] = sub
        self._ensure_thread()
        self._wake.set()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.pop(sub.id, None)

    def poke(self) -> None:
        """Ask the tailer to look now (writers in this process call it after committing)."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    # -- the tailer --------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name=f"comfyvn-hook-bus:{self.db.url.rsplit('/', 1)[-1]}")
                self._thread.start()

    def _run(self) -> None:
        if self.db.engine == "postgresql":
            try:
                tail_postgresql(self.db, self._dispatch, self._wake, self._stop, slow_poll=self.pg_poll_interval)
            except Exception:  # pragma: no cover - logged, the next subscribe restarts the thread
                log.exception("hook bus tailer stopped")
            return
        watcher = ChangeWatcher(self.db)
        last_version = None
        try:
            while not self._stop.is_set():
                version = watcher.marker()
                if version != last_version or self._wake.is_set():
                    self._wake.clear()
                    last_version = version
                    self._dispatch(watcher.conn)
                self._wake.wait(self.poll_interval)
        except Exception:  # pragma: no cover - logged, the next subscribe restarts the thread
            log.exception("hook bus tailer stopped")
        finally:
            watcher.close()

    def _dispatch(self, conn) -> None:
        while True:
            with self._lock:
                subs = list(self._subs.values())
            if not subs:
                return
            start = min(s.cursor for s in subs)
            batch, more = read_batch(conn, after_id=start, limit=500, max_bytes=DISPATCH_BATCH_BYTES)
            for env in batch:
                for sub in subs:
                    if not sub.active or env["id"] <= sub.cursor:
                        continue
                    sub.cursor = env["id"]
                    if sub.wants(env["event"]):
                        try:
                            sub.callback(env)
                        except Exception:
                            log.exception("hook subscriber %s failed on event %s", sub.id, env["id"])
            if not more:  # the log's end: nothing to read until the next wake-up
                return


_buses: dict[str, ModderHookBus] = {}
_buses_lock = threading.Lock()


def get_hook_bus(db_or_path: Database | Path | None = None) -> ModderHookBus:
    """The process-wide bus of a workspace database (default: the current workspace)."""
    if db_or_path is None:
        from ..config import workspace

        db_or_path = open_store(workspace())
    db = db_or_path if isinstance(db_or_path, Database) else get_database(Path(db_or_path))
    with _buses_lock:
        bus = _buses.get(db.url)
        if bus is None:
            bus = _buses[db.url] = ModderHookBus(db)
        return bus
