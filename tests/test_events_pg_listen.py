"""The LISTEN/NOTIFY wake-up of the event log on a real PostgreSQL (never a mock)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from comfyvn.hooks import emit
from comfyvn.hooks.pgwake import EVENTS_CHANNEL, NotifyListener
from comfyvn.store import database_at, forget_database

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


def test_an_append_wakes_the_listener_once_its_transaction_commits(pg_url):
    db = database_at(pg_url)
    wakes = Wakes()
    listener = NotifyListener(pg_url, wakes).start()
    try:
        assert listener.connected.wait(WAIT)
        base = wakes.wait_above(0)  # the wake-up every (re)connection makes
        with db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "one"})
            # not yet: NOTIFY is delivered at commit
            conn.execute("SELECT pg_sleep(0.3)")
            assert wakes.count == base
        assert wakes.wait_above(base) == base + 1
        with pytest.raises(KeyError), db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "rolled back"})
            raise KeyError("roll back")
        with psycopg.connect(pg_url, autocommit=True) as raw:
            raw.execute(f"NOTIFY {EVENTS_CHANNEL}")  # a rolled-back append woke no one: this is the next wake
        assert wakes.wait_above(base + 1) == base + 2
    finally:
        listener.stop()
        forget_database(pg_url)
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
