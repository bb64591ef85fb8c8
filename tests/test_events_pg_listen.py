"""The LISTEN/NOTIFY wake-up of the event log on a real PostgreSQL (never a mock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from event_helpers import WAIT, wait_until

from comfyvn.hooks import emit
from comfyvn.hooks.pgwake import EVENTS_CHANNEL, NotifyListener


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


@contextmanager
def listening(url: str, wakes: Wakes) -> Iterator[NotifyListener]:
    """A started listener, connected; stopped after the block."""
    listener = NotifyListener(url, wakes).start()
    try:
        assert listener.connected.wait(WAIT)
        yield listener
    finally:
        listener.stop()


def test_an_append_wakes_the_listener_once_its_transaction_commits(pg_db):
    pg_url = pg_db.url
    wakes = Wakes()
    with listening(pg_url, wakes) as listener:
        base = wakes.wait_above(0)  # the wake-up every (re)connection makes
        with pg_db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "one"})
            # not yet: NOTIFY is delivered at commit
            conn.execute("SELECT pg_sleep(0.3)")
            assert wakes.count == base
        assert wakes.wait_above(base) == base + 1
        with pytest.raises(KeyError), pg_db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "rolled back"})
            raise KeyError("roll back")
        with psycopg.connect(pg_url, autocommit=True) as raw:
            raw.execute(f"NOTIFY {EVENTS_CHANNEL}")  # a rolled-back append woke no one: this is the next wake
        assert wakes.wait_above(base + 1) == base + 2
    assert not listener.alive


def test_the_listener_reconnects_after_the_server_restarts(pg_cluster, pg_url):
    wakes = Wakes()
    with listening(pg_url, wakes) as listener:
        pg_cluster.restart(down_for=0.5)
        wait_until(lambda: bool(listener.reconnects and listener.connected.is_set()), "the listener did not reconnect")
        base = wakes.count
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"NOTIFY {EVENTS_CHANNEL}")  # listening again: it wakes us
        assert wakes.wait_above(base) == base + 1
