"""The LISTEN/NOTIFY wake-up of the event log on a real PostgreSQL (never a mock)."""

from __future__ import annotations

import threading
import time

import psycopg

from comfyvn.hooks.pgwake import EVENTS_CHANNEL, LOCK_AND_NOTIFY_SQL, NotifyListener

WAIT = 30  # seconds; a guard against hanging, never a speed assertion


class Wakes:
    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def __call__(self) -> None:
        with self.cond:
            self.count += 1
            self.cond.notify_all()

    def wait_above(self, n: int) -> int:
        with self.cond:
            assert self.cond.wait_for(lambda: self.count > n, timeout=WAIT), f"no wake-up after {n}"
            return self.count


def test_a_notification_wakes_only_once_the_emitting_transaction_commits(pg_url):
    wakes = Wakes()
    listener = NotifyListener(pg_url, wakes).start()
    try:
        assert listener.connected.wait(WAIT)
        base = wakes.wait_above(0)  # the wake-up every (re)connection makes
        with psycopg.connect(pg_url) as conn:
            conn.execute(LOCK_AND_NOTIFY_SQL)
            # not yet: NOTIFY is delivered at commit (a rolled-back append never wakes anyone)
            conn.execute("SELECT pg_sleep(0.3)")
            assert wakes.count == base
        assert wakes.wait_above(base) == base + 1
        with psycopg.connect(pg_url) as conn:
            conn.execute(LOCK_AND_NOTIFY_SQL)
            conn.rollback()
            conn.execute(f"NOTIFY {EVENTS_CHANNEL}")
        assert wakes.wait_above(base + 1) == base + 2
    finally:
        listener.stop()
    assert not listener.alive


def test_the_listener_reconnects_after_the_server_restarts(pg_cluster, pg_url):
    wakes = Wakes()
    listener = NotifyListener(pg_url, wakes).start()
    try:
        assert listener.connected.wait(WAIT)
        pg_cluster.restart(down_for=0.5)
        deadline = time.monotonic() + WAIT
        while not (listener.reconnects and listener.connected.is_set()):
            assert time.monotonic() < deadline, "the listener did not reconnect"
            time.sleep(0.05)
        base = wakes.count
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"NOTIFY {EVENTS_CHANNEL}")  # listening again: it wakes us
        assert wakes.wait_above(base) == base + 1
    finally:
        listener.stop()
