"""Helpers of the event-log and hook-bus tests (test_hook_bus, test_events_pg*, test_fanout_pg):
receiving events from a bus, waiting for a condition, one-shot PostgreSQL probes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

WAIT = 30  # seconds; a guard against hanging, never a speed assertion


class Collector:
    """Thread-safe list of received envelopes (a bus subscriber) with a wait helper."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, env: dict) -> None:
        with self.cond:
            self.items.append(env)
            self.cond.notify_all()

    def wait_for(self, done: int | Callable[[list[dict]], bool], what: str = "") -> list[dict]:
        """The items once there are ``done`` of them (an int) or ``done(items)`` holds (``what``
        names it in the failure); fails after :data:`WAIT` seconds."""
        with self.cond:
            if isinstance(done, int):
                n = done
                assert self.cond.wait_for(lambda: len(self.items) >= n, timeout=WAIT), \
                    f"got {len(self.items)} of {n} events"
            else:
                check = done
                assert self.cond.wait_for(lambda: check(self.items), timeout=WAIT), \
                    f"{what}: got {[e['id'] for e in self.items]}"
            return list(self.items)


def wait_until(condition: Callable[[], bool], what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fails with ``what`` after :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(interval)


def pg_scalar(url: str, sql: str, params: Any = None) -> Any:
    """The one value ``sql`` answers, read on a fresh autocommit connection to ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0]
