"""The event log on a real PostgreSQL: appends never commit out of id order, so a reader tailing
``id > last seen`` never skips; LISTEN/NOTIFY wakes the bus of another process; the bus resumes
after a server restart without losing an event."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from event_helpers import WAIT, Collector, pg_scalar, wait_until

from comfyvn.hooks import emit, get_hook_bus
from comfyvn.hooks.bus import ModderHookBus
from comfyvn.hooks.events import read_events
from comfyvn.hooks.pgwake import EVENT_LOG_LOCK
from comfyvn.store import Database, StoreUnavailable, database_at, forget_database


@pytest.fixture
def pg_ws(ws, pg_url, monkeypatch):
    """A workspace whose configured store is a fresh PostgreSQL database."""
    monkeypatch.setenv("COMFYVN_STORE_URL", pg_url)
    yield ws
    forget_database(pg_url)


@contextmanager
def bare_transaction(db: Database) -> Iterator:
    """A transaction on a private connection that skips the store's own write lock: the event log
    must keep its order by itself, whatever the store serialises."""
    conn = db.new_connection()
    try:
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def _naive_append(conn) -> int:
    """An append without the event-log lock: just the INSERT."""
    return conn.execute("INSERT INTO events(topic, ts, project_id, data) VALUES ('on_modder_test', 0, NULL, '{}')"
                        " RETURNING id").fetchone()[0]


def _waiting_for_the_event_lock(url: str) -> int:
    return pg_scalar(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                          " AND classid = %s AND objid = %s AND objsubid = 2"
                          " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                     EVENT_LOG_LOCK)


def test_a_naive_id_tail_skips_an_event_that_commits_out_of_id_order(pg_db):
    """The trap itself: two writers append without the event-log lock; the lower id commits
    last, and a reader that tails ``id > last seen`` never sees it."""
    first_ctx, second_ctx = bare_transaction(pg_db), bare_transaction(pg_db)
    first, second = first_ctx.__enter__(), second_ctx.__enter__()
    low = _naive_append(first)
    high = _naive_append(second)
    assert high > low
    second_ctx.__exit__(None, None, None)  # the higher id commits first
    seen = [e["id"] for e in read_events(pg_db.conn, after_id=0)]
    assert seen == [high]
    first_ctx.__exit__(None, None, None)
    seen += [e["id"] for e in read_events(pg_db.conn, after_id=seen[-1])]
    assert seen == [high]  # `low` is committed, yet the tail never returns it
    assert [e["id"] for e in read_events(pg_db.conn, after_id=0)] == [low, high]


def test_emit_serialises_appends_so_ids_commit_in_order(pg_db):
    """The remedy, the same two writers through ``emit()``: the second waits for the first
    writer's commit before it takes an id, so the tail reads every event, in id order."""
    first_emitted, release_first = threading.Event(), threading.Event()
    ids: dict[str, int] = {}

    def first() -> None:
        with bare_transaction(pg_db) as conn:
            ids["first"] = emit(conn, "on_modder_test", {"message": "first"})["id"]
            first_emitted.set()
            assert release_first.wait(WAIT)

    def second() -> None:
        with bare_transaction(pg_db) as conn:
            ids["second"] = emit(conn, "on_modder_test", {"message": "second"})["id"]

    a = threading.Thread(target=first)
    a.start()
    assert first_emitted.wait(WAIT)
    b = threading.Thread(target=second)
    b.start()
    wait_until(lambda: _waiting_for_the_event_lock(pg_db.url) != 0,  # the second append queues behind the first
               "the second append did not wait for the first", interval=0.01)
    assert "second" not in ids and read_events(pg_db.conn, after_id=0) == []
    release_first.set()
    a.join(WAIT)
    b.join(WAIT)
    assert ids["first"] < ids["second"]
    assert [e["id"] for e in read_events(pg_db.conn, after_id=0)] == [ids["first"], ids["second"]]


_WRITER = r"""
import os, random, sys, time
from comfyvn.hooks import emit
from comfyvn.store import database_at
db = database_at({target!r})
random.seed(os.getpid())
for i in range(int(sys.argv[1])):
    with db.transaction() as conn:
        emit(conn, "on_modder_test", {{"message": "proc", "seq": i}})
        time.sleep(random.random() * 0.01)  # a deliberately delayed commit
print("done", flush=True)
"""


def test_concurrent_delayed_commits_reach_a_tailing_reader_exactly_once_in_order(pg_db):
    """Many connections (threads, on bare transactions) and processes (through the store's
    transactions) append at once, each holding its transaction open a random while after the
    insert; the bus tails the log meanwhile and must hand every committed event over exactly
    once, in id order (rolled-back appends never appear)."""
    bus = ModderHookBus(pg_db)
    got = Collector()
    bus.subscribe(got, topics=["on_modder_test"], after_id=0)
    threads, per_thread, procs, per_proc = 8, 25, 2, 40
    rolled_back: list[int] = []

    def writer(n: int) -> None:
        rnd = random.Random(n)
        for i in range(per_thread):
            try:
                with bare_transaction(pg_db) as conn:
                    env = emit(conn, "on_modder_test", {"message": "thread", "writer": n, "seq": i})
                    time.sleep(rnd.random() * 0.01)
                    if i % 10 == 9:
                        rolled_back.append(env["id"])
                        raise KeyError("roll back")
            except KeyError:
                pass

    children = [subprocess.Popen([sys.executable, "-c", _WRITER.format(target=pg_db.url),
                                  str(per_proc)], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
                for _ in range(procs)]
    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    for child in children:
        assert child.wait(120) == 0
    committed = [e["id"] for e in read_events(pg_db.conn, after_id=0, limit=100_000)]
    expected = threads * per_thread - len(rolled_back) + procs * per_proc
    assert len(committed) == expected and not set(rolled_back) & set(committed)
    with pg_db.transaction() as conn:  # the last event: everything before it has been handed over
        last = emit(conn, "on_modder_test", {"message": "last"})["id"]
    items = got.wait_for(lambda items: any(e["id"] == last for e in items), "the tail missed events")
    bus.close()
    assert [e["id"] for e in items] == [*committed, last]  # each once, in id order, none skipped


_REGISTER = r"""
import sys
from pathlib import Path
from comfyvn.studio.core.asset_registry import AssetRegistry
asset = AssetRegistry(make_thumbnails=False).register_file(Path(sys.argv[1]), "image")
print(asset["uid"], flush=True)
"""


def test_a_registration_in_one_process_reaches_a_bus_subscriber_in_another(pg_ws, tmp_path):
    """Two processes on one PostgreSQL store; the subscriber's bus polls only once an hour, so
    the event can only have reached it through NOTIFY."""
    bus = get_hook_bus()
    bus.pg_poll_interval = 3600
    got = Collector()
    bus.subscribe(got, topics=["on_asset_registered"])
    src = tmp_path / "hero.png"
    src.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    out = subprocess.run([sys.executable, "-c", _REGISTER, str(src)], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120)
    assert out.returncode == 0, out.stderr
    uid = out.stdout.split()[-1]
    items = got.wait_for(lambda items: any(e["data"].get("uid") == uid for e in items), "no registration")
    assert items[-1]["data"]["uid"] == uid


def test_the_bus_resumes_after_a_server_restart_without_losing_an_event(pg_cluster, pg_db):
    bus = ModderHookBus(pg_db)
    bus.pg_poll_interval = 3600  # only NOTIFY and the reconnect's own read can wake it
    got = Collector()
    bus.subscribe(got, topics=["on_modder_test"], after_id=0)
    with pg_db.transaction() as conn:
        before = emit(conn, "on_modder_test", {"message": "before"})["id"]
    got.wait_for(lambda items: len(items) == 1, "the first event")
    pg_cluster.restart(down_for=0.5)
    after: list[int] = []
    deadline = time.monotonic() + WAIT
    while len(after) < 5:  # appended as soon as the server takes writes again, before the bus reconnects
        try:
            with pg_db.transaction() as conn:
                after.append(emit(conn, "on_modder_test", {"message": "after", "seq": len(after)})["id"])
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not come back"
            time.sleep(0.05)
    items = got.wait_for(lambda items: len(items) >= 6, "events after the restart")
    bus.close()
    assert [e["id"] for e in items] == [before, *after]


def _listeners(url: str) -> int:
    return pg_scalar(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                          " AND application_name = 'comfyvn-events-listen'")


def test_a_closed_store_leaves_no_listening_connection_behind(pg_url):
    """A bus whose store was closed (a test dropping its database, a process forgetting a store)
    stops listening instead of holding a server connection for the rest of the process."""
    bus = ModderHookBus(database_at(pg_url))
    bus.subscribe(lambda env: None)
    wait_until(lambda: _listeners(pg_url) == 1, "the bus never listened")
    forget_database(pg_url)
    bus.poke()  # its next read finds the store closed
    wait_until(lambda: _listeners(pg_url) == 0, "the bus still listens on a closed store")
    bus.close()
