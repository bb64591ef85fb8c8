"""PostgreSQL side of the event log: ordered appends and ``LISTEN/NOTIFY`` wake-ups.

**Appends are serialised** (the out-of-order commit trap): on PostgreSQL an id is taken when a
transaction inserts and the row becomes visible when it commits, so with two writers id 8 can
commit after id 9, and a reader tailing ``id > last seen`` that read 9 first never sees 8.
Every append therefore takes one transaction-level advisory lock of the workspace database
(:data:`EVENT_LOG_LOCK`) in its insert statement, before any id is drawn, and holds it to
commit (PostgreSQL makes the commit visible before it releases the lock; the store's own write
lock serialises write transactions today as well, but the log does not rely on it): ids are taken and committed in the same order, so
``id > last seen`` never skips, for every reader the log has (the bus, WebSocket replays, the
webhook fan-out, history pages) without changing them.  Writers of events queue only for the
insert-to-commit tail of their transactions.  (This needs the ids' sequence to hand out values
in call order, as it does with its default ``CACHE 1``: a per-session cache would not.)

**Wake-ups**: the appending transaction also issues ``NOTIFY`` (:data:`EVENTS_CHANNEL`), which
PostgreSQL delivers to every listening session of the database at commit.  Each process's bus
runs a :class:`NotifyListener` that waits on an autocommit ``LISTEN`` connection and wakes the
bus tailer; the log stays the truth (the tailer also reads on a slow poll and after every
reconnect), so a lost notification costs latency, never an event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..store import StoreUnavailable

log = logging.getLogger("comfyvn.hooks.pgwake")

#: the NOTIFY channel of the event log (notifications stay within one database: one workspace)
EVENTS_CHANNEL = "comfyvn_events"
#: (class, key) of the transaction-level advisory lock serialising appends to the event log; the
#: two-int4 form never collides with single-bigint advisory locks (PostgreSQL keeps them apart)
EVENT_LOG_LOCK = (0x636F6D66, 1)  # "comf", 1
#: the append (``{}``: the VALUES rows): the lock is taken in the same statement before any id is
#: drawn (the CTE is scanned before the rows that nextval() is computed for) and held to commit;
#: the NOTIFY is sent only if the transaction commits
PG_SERIALISED_INSERT = (
    f"WITH serialised AS MATERIALIZED (SELECT pg_advisory_xact_lock({EVENT_LOG_LOCK[0]}, {EVENT_LOG_LOCK[1]}),"
    f" pg_notify('{EVENTS_CHANNEL}', '')) INSERT INTO events(topic, ts, project_id, data)"
    " SELECT v.* FROM (VALUES {}) AS v(topic, ts, project_id, data) CROSS JOIN serialised")


class NotifyListener:
    """A daemon thread calling ``on_wake()`` for each notification on :data:`EVENTS_CHANNEL`.

    It reconnects (with a growing pause, at most ``max_backoff`` s) when the connection fails,
    e.g. when the server restarts, and calls ``on_wake()`` once it listens again: whatever was
    committed meanwhile is then read from the log.  A ``SELECT 1`` every ``health_every`` s finds
    a connection that died without telling us.
    """

    def __init__(self, url: str, on_wake: Callable[[], None], *, name: str = "comfyvn-events-listen",
                 health_every: float = 5.0, max_backoff: float = 2.0) -> None:
        self.url = url
        self.on_wake = on_wake
        self.health_every = health_every
        self.max_backoff = max_backoff
        self.connected = threading.Event()
        self.reconnects = 0  # connections made after the first one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> NotifyListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        import psycopg

        pause = 0.05
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                     application_name="comfyvn-events-listen") as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    if not first:
                        self.reconnects += 1
                        log.info("event log: listening again after a lost connection")
                    first = False
                    pause = 0.05
                    self.on_wake()  # committed while we were not listening: the tailer reads the log
                    self.connected.set()
                    self._listen(conn)
            except psycopg.Error as exc:
                if not self._stop.is_set():
                    log.warning("event log: LISTEN connection failed (%s); retrying in %.2f s",
                                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, pause)
            except Exception:  # pragma: no cover - never let the thread die silently
                log.exception("event log: listener failed")
            self.connected.clear()
            self._stop.wait(pause)
            pause = min(pause * 2, self.max_backoff)

    def _listen(self, conn) -> None:
        checked = time.monotonic()
        while not self._stop.is_set():
            for _ in conn.notifies(timeout=min(0.5, self.health_every)):
                self.on_wake()
                if self._stop.is_set():
                    return
            if time.monotonic() - checked >= self.health_every:
                conn.execute("SELECT 1")  # raises on a connection that died silently
                checked = time.monotonic()


def tail_postgresql(db, dispatch: Callable[[object], None], wake: threading.Event, stop: threading.Event, *,
                    slow_poll: float = 1.0, min_gap: float = 0.005, name: str = "comfyvn-events-listen") -> None:
    """The bus tailer's loop on PostgreSQL (runs on the bus thread until ``stop`` is set).

    ``dispatch(conn)`` reads the log after the subscribers' cursors and hands the events on.  It
    runs when a notification (or a local ``poke``) sets ``wake``, and at least every
    ``slow_poll`` s; reads are at least ``min_gap`` s apart, so a burst of notifications costs
    one read, not one per event.  A failed read (the server restarting, the store closed) drops
    the connection and the listener and retries with a growing pause; the cursors have not moved,
    so the next read resumes from them, and the listener starts again once the log reads again.
    """
    import psycopg

    listener: NotifyListener | None = None
    conn = None
    pause = 0.05
    last_read = 0.0
    failing = False
    try:
        while not stop.is_set():
            try:
                if conn is None:
                    conn = db.new_connection()
                early = last_read + min_gap - time.monotonic()
                if early > 0 and stop.wait(early):
                    break
                wake.clear()  # before reading: a commit during the read wakes the next round
                last_read = time.monotonic()
                dispatch(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, StoreUnavailable) as exc:
                text = str(exc).strip()
                (log.debug if failing else log.warning)(
                    "event log: reading failed (%s); retrying", text.splitlines()[0] if text else type(exc).__name__)
                failing = True
                if listener is not None:  # listen only while the log can be read (a closed store leaks nothing)
                    listener.stop(timeout=0)
                    listener = None
                _close_quietly(conn)
                conn = None
                stop.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            if failing:
                log.info("event log: reading again")
            failing, pause = False, 0.05
            if listener is None:  # its first connection wakes us: what committed meanwhile is read then
                listener = NotifyListener(db.url, wake.set, name=name).start()
            wake.wait(slow_poll)
    finally:
        if listener is not None:
            listener.stop()
        _close_quietly(conn)


def _close_quietly(conn) -> None:
    if conn is not None:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
            pass
