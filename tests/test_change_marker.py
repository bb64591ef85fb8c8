"""The store's "did anyone commit?" check (ChangeWatcher), on both engines."""

from __future__ import annotations

import pytest

from comfyvn.store import Database, StoreUnavailable
from comfyvn.store.base import ChangeWatcher


def _commit_elsewhere(store: Database, n: int) -> None:
    other = store.new_connection()  # another connection, as another thread or process would commit
    try:
        other.execute("BEGIN")
        other.execute("INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)", (f"marker-test-{n}", 0.0))
        other.execute("COMMIT")
    finally:
        other.close()


def test_a_commit_on_another_connection_changes_the_marker_and_nothing_else_does(store):
    watcher = ChangeWatcher(store)
    try:
        first = watcher.marker()
        assert watcher.marker() == first  # no commit: unchanged
        store.query("SELECT count(*) FROM schema_migrations")  # reads change nothing
        watcher.conn.execute("SELECT count(*) FROM schema_migrations").fetchall()
        assert watcher.marker() == first
        seen = {first}
        for n in range(3):
            _commit_elsewhere(store, n)
            now = watcher.marker()
            assert now not in seen, f"commit {n} left the marker at {now!r}"
            seen.add(now)
            assert watcher.marker() == now
        with store.transaction() as tx:  # this thread's own connection commits too
            tx.execute("INSERT INTO schema_migrations(name, applied_at) VALUES (?, ?)", ("marker-test-tx", 0.0))
        assert watcher.marker() not in seen
    finally:
        watcher.close()


def test_two_watchers_agree_that_a_commit_happened(store):
    a, b = ChangeWatcher(store), ChangeWatcher(store)
    try:
        before = a.marker(), b.marker()
        _commit_elsewhere(store, 10)
        assert a.marker() != before[0] and b.marker() != before[1]
    finally:
        a.close()
        b.close()


def test_a_failed_read_drops_the_connection_and_the_next_read_opens_another(store, monkeypatch):
    watcher = ChangeWatcher(store)
    try:
        watcher.marker()
        broken = watcher.conn

        def lost(conn):
            raise StoreUnavailable("PostgreSQL store connection lost")  # as a server restart would

        with monkeypatch.context() as m:
            m.setattr(store, "change_marker", lost)
            with pytest.raises(StoreUnavailable):
                watcher.marker()
        assert watcher.conn is not broken
        marker = watcher.marker()
        _commit_elsewhere(store, 20)
        assert watcher.marker() != marker
    finally:
        watcher.close()


def test_the_page_cache_answers_again_only_until_a_commit(store):
    from comfyvn_server_ext.handlers.assets import PageCache

    cache = PageCache(store)
    made: list[int] = []

    def make() -> bytes:
        made.append(1)
        return b"page"

    assert cache.get(("k",), make) == b"page" and len(made) == 1
    assert cache.get(("k",), make) == b"page" and len(made) == 1  # nothing committed: served again
    _commit_elsewhere(store, 30)
    cache.get(("k",), make)
    assert len(made) == 2


def test_the_page_cache_makes_answers_afresh_when_the_store_cannot_be_read(store, monkeypatch):
    from comfyvn_server_ext.handlers.assets import PageCache

    cache = PageCache(store)
    cache.get(("k",), lambda: b"old")

    def unreachable(conn):
        raise StoreUnavailable("PostgreSQL store unreachable")

    monkeypatch.setattr(store, "change_marker", unreachable)
    assert cache.version() is None
    assert cache.get(("k",), lambda: b"new") == b"new"


def test_marker_now_reads_without_waiting_on_sqlite_only(store):
    watcher = ChangeWatcher(store, wait=False)
    try:
        assert watcher.marker_now() is None  # never opens a connection itself (that may wait)
        first = watcher.marker()  # opened here, off any event loop
        if store.engine != "sqlite":  # a read over the network is never done on the loop
            assert watcher.marker_now() is None
            return
        assert watcher.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 0  # a locked database raises at once
        assert watcher.marker_now() == first
        _commit_elsewhere(store, 40)
        now = watcher.marker_now()
        assert now is not None and now != first and watcher.marker() == now
        with watcher._lock:  # another thread reading: no waiting for it either
            assert watcher.marker_now() is None
    finally:
        watcher.close()


def test_a_waiting_watcher_keeps_the_store_s_busy_timeout(store):
    watcher = ChangeWatcher(store)
    try:
        watcher.marker()
        assert watcher.marker_now() is None
        if store.engine == "sqlite":
            assert watcher.conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    finally:
        watcher.close()
