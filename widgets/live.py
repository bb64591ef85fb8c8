"""Live updates for displayed widgets: a daemon worker thread fed by the hook bus.

Under ipykernel 7 asyncio tasks started in a cell stall once the cell ends, so dashboards
update the traits of their (already displayed) widgets from this thread instead:

* the hook bus of the process tails the workspace's event log (it sees commits made by every
  process) and hands matching envelopes to :meth:`LiveUpdater._on_event` on the bus thread;
* the worker collects them for ``debounce`` seconds and calls ``refresh(batch)`` once;
* ``tick()`` (optional) runs every ``tick_interval`` seconds while ``tick_wanted()`` says so
  (e.g. thumbnails still pending, downloads in progress);
* :meth:`request` runs ``refresh([])`` soon, debounced too (typing in a search box);
  ``request(debounce=False)`` at once (work the caller left for the worker: a count).

Errors in callbacks never kill the thread; they go to ``on_error``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from comfyvn.hooks import get_hook_bus
from comfyvn.store import Database

log = logging.getLogger("comfyvn.widgets.live")


class LiveUpdater:
    def __init__(self, db: Database, refresh: Callable[[list[dict]], None], *, topics: list[str] | None = None,
                 debounce: float = 0.08, tick: Callable[[], None] | None = None, tick_interval: float = 0.5,
                 tick_wanted: Callable[[], bool] | None = None,
                 on_error: Callable[[BaseException], None] | None = None, name: str = "comfyvn-live") -> None:
        self.db = db
        self.refresh = refresh
        self.topics = topics
        self.debounce = debounce
        self.tick = tick
        self.tick_interval = tick_interval
        self.tick_wanted = tick_wanted or (lambda: True)
        self.on_error = on_error
        self.name = name
        self._pending: list[dict] = []
        self._requested = False
        self._urgent = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sub = None
        self.refreshes = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self, after_id: int | None = None) -> LiveUpdater:
        """Subscribe from ``after_id`` (the event id the widget's data reflects) and start the worker."""
        if self.running:
            return self
        self._stop.clear()
        self._sub = get_hook_bus(self.db).subscribe(self._on_event, topics=self.topics, after_id=after_id)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._thread = None

    def request(self, debounce: bool = True) -> None:
        """Ask for a ``refresh([])`` from the worker thread: debounced, or at once."""
        with self._lock:
            self._requested = True
            self._urgent = self._urgent or not debounce
        self._wake.set()

    def _on_event(self, envelope: dict) -> None:  # runs on the bus thread: keep it short
        with self._lock:
            self._pending.append(envelope)
        self._wake.set()

    def _take(self) -> tuple[list[dict], bool]:
        with self._lock:
            batch, self._pending = self._pending, []
            requested, self._requested = self._requested, False
            self._urgent = False
        return batch, requested

    def _report(self, exc: BaseException) -> None:
        if self.on_error is None:
            log.exception("live update failed", exc_info=exc)
            return
        try:
            self.on_error(exc)
        except Exception:  # pragma: no cover - last resort
            log.exception("live update error handler failed")

    def _run(self) -> None:
        next_tick = time.monotonic() + self.tick_interval
        while not self._stop.is_set():
            timeout = max(0.0, next_tick - time.monotonic()) if self.tick else None
            woke = self._wake.wait(timeout)
            if self._stop.is_set():
                return
            if woke:
                self._wake.clear()
                # debounce: let a burst of commits (a bulk edit, a batch ingest) arrive first
                deadline = time.monotonic() + self.debounce
                while time.monotonic() < deadline and not self._stop.is_set() and not self._urgent:
                    time.sleep(min(0.02, self.debounce))
                batch, requested = self._take()
                if batch or requested:
                    try:
                        self.refresh(batch)
                        self.refreshes += 1
                    except Exception as exc:
                        self._report(exc)
            if self.tick and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.tick_interval
                try:
                    if self.tick_wanted():
                        self.tick()
                except Exception as exc:
                    self._report(exc)


class LiveDashboard:
    """What every dashboard does with its :class:`LiveUpdater`: stop following, and close.

    Subclasses set ``self.updater`` in their ``start_live()`` and provide ``widget`` and ``render()``.
    """

    updater: LiveUpdater | None = None

    def stop_live(self) -> None:
        if self.updater is not None:
            self.updater.stop()
        self.render()

    def close(self) -> None:
        """Stop the worker thread and close the widget tree (call before re-running a cell)."""
        self.stop_live()
        self.widget.close()
