"""The persistent hash cache: a hit costs one stat and no read; any key change is a miss."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

import comfyvn.hashforms as hf
from comfyvn.hashforms import HashForms, hash_bytes
from comfyvn.library.hashcache import FileChangedError, HashCache, cache_key
from comfyvn.store import open_store

OLD_NS = 1_600_000_000 * 10**9  # an mtime well outside the racy window


def make(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


@pytest.fixture
def cache(ws) -> HashCache:
    return HashCache(open_store(ws))


@pytest.fixture
def no_reads(monkeypatch):
    """Make any open or read of a file fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the file was opened or read")

    def arm():
        monkeypatch.setattr(os, "open", refuse)
        monkeypatch.setattr(os, "preadv", refuse)
    return arm


def test_migration_creates_the_table(ws):
    HashCache(open_store(ws))
    db = open_store(ws)
    assert "library.001_hash_cache" in db.applied_migrations()
    assert db.query_one("SELECT count(*) FROM library_hash_cache")[0] == 0
    HashCache(open_store(ws))  # a second instance (or process) does not apply it again
    assert db.applied_migrations().count("library.001_hash_cache") == 1


def test_the_store_lists_the_library_migrations_once():
    from comfyvn.library.schema import LIBRARY_MIGRATIONS
    from comfyvn.store.migrations import MIGRATIONS

    names = [name for name, _ in MIGRATIONS]
    assert all(names.count(name) == 1 for name, _ in LIBRARY_MIGRATIONS)


def test_rescan_of_an_unchanged_file_reads_nothing(cache, tmp_path, no_reads):
    data = os.urandom(hf.THREADED_FROM + 12345)
    path = make(tmp_path / "model.safetensors", data)
    first = cache.hash_file(path)
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert cache.counters() == {"hits": 0, "misses": 1, "files_read": 1, "bytes_read": len(data),
                                "not_stored_racy": 0}
    no_reads()
    assert cache.hash_file(path) == first
    assert cache.counters() == {"hits": 1, "misses": 1, "files_read": 1, "bytes_read": len(data),
                                "not_stored_racy": 0}


def test_the_cache_persists_across_instances(ws, tmp_path, no_reads):
    path = make(tmp_path / "a.bin", b"x" * 5000)
    forms = HashCache(open_store(ws)).hash_file(path)
    fresh = HashCache(open_store(ws))
    no_reads()
    assert fresh.hash_file(path) == forms
    assert fresh.counters()["hits"] == 1 and fresh.bytes_read == 0


def test_content_rewritten_in_place_is_a_miss(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 4096)
    old = cache.hash_file(path)
    make(path, b"b" * 4096, OLD_NS + 1)  # same size, same inode, mtime one nanosecond later
    new = cache.hash_file(path)
    assert new.sha256 == hashlib.sha256(b"b" * 4096).hexdigest() != old.sha256
    assert cache.files_read == 2
    assert cache.hash_file(path) == new and cache.files_read == 2  # the new row replaced the old one


def test_size_change_is_a_miss(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 4096)
    cache.hash_file(path)
    make(path, b"a" * 4097)  # same mtime, other size
    assert cache.hash_file(path).size == 4097
    assert cache.files_read == 2


def test_file_replaced_by_rename_is_a_miss(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 4096)
    cache.hash_file(path)
    other = make(tmp_path / "b.bin", b"c" * 4096)  # same size and mtime, another inode
    os.replace(other, path)
    assert cache.hash_file(path).sha256 == hashlib.sha256(b"c" * 4096).hexdigest()
    assert cache.files_read == 2


def test_every_key_part_invalidates(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"q" * 100)
    st = os.stat(path)
    forms = hash_bytes(b"q" * 100)
    cache.store(st, forms)
    assert cache.lookup(st) == forms
    fields = ["st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
              "st_atime", "st_mtime", "st_ctime"]
    base = list(st[:10])
    extra = {"st_mtime_ns": st.st_mtime_ns}
    for name in ("st_ino", "st_dev", "st_size", "st_mtime_ns"):
        values, ns = base[:], dict(extra)
        if name == "st_mtime_ns":
            ns["st_mtime_ns"] += 1
        else:
            values[fields.index(name)] += 1
        changed = os.stat_result(values, ns)
        assert cache_key(changed) != cache_key(st)
        assert cache.lookup(changed) is None, name
        assert cache.known_many([st, changed]) == [True, False], name
    assert cache.lookup_many([st, os.stat_result(base, {"st_mtime_ns": st.st_mtime_ns + 1})]) == [forms, None]


def test_lookup_many_across_batches(cache, tmp_path):
    import comfyvn.library.hashcache as hc

    stats, expected = [], []
    for i in range(2 * hc._BATCH + 100):  # three queries
        path = make(tmp_path / f"f{i}.bin", i.to_bytes(4, "little"))
        st = os.stat(path)
        stats.append(st)
        if i % 3:
            forms = hash_bytes(i.to_bytes(4, "little"))
            expected.append(forms)
            cache.store(st, forms)
        else:
            expected.append(None)
    assert cache.lookup_many(stats) == expected
    cached = sum(e is not None for e in expected)
    assert cache.hits == cached and cache.misses == len(stats) - cached
    assert cache.known_many(stats) == [e is not None for e in expected]
    changed = [os.stat_result(list(st[:10]), {"st_mtime_ns": st.st_mtime_ns + 1}) for st in stats]
    assert cache.known_many(changed) == [False] * len(stats)


def test_a_fresh_file_is_hashed_but_not_stored(cache, tmp_path):
    path = tmp_path / "new.bin"
    path.write_bytes(b"z" * 1000)  # mtime: now, inside the racy window
    cache.hash_file(path)
    cache.hash_file(path)
    assert cache.files_read == 2 and cache.not_stored_racy == 2
    os.utime(path, ns=(OLD_NS, OLD_NS))
    cache.hash_file(path)
    cache.hash_file(path)
    assert cache.files_read == 3 and cache.hits == 1


def test_file_changing_while_hashed_is_refused_and_not_stored(cache, tmp_path):
    data = os.urandom(hf.CHUNK + 1000)  # two reads
    path = make(tmp_path / "growing.bin", data)

    def append_once(n: int, done=[]) -> None:  # noqa: B006 - one-shot flag
        if not done:
            done.append(True)
            with open(path, "ab") as fh:
                fh.write(b"more")

    with pytest.raises(FileChangedError, match="changed while it was being hashed"):
        cache.hash_file(path, on_bytes=append_once)
    assert cache.lookup(os.stat(path)) is None
    os.utime(path, ns=(OLD_NS, OLD_NS))
    assert cache.hash_file(path).sha256 == hashlib.sha256(data + b"more").hexdigest()


def test_refresh_rereads_and_replaces(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 10)
    cache.hash_file(path)
    cache.hash_file(path, refresh=True)
    assert cache.files_read == 2 and cache.hits == 0


def test_store_refuses_forms_of_another_size(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 10)
    with pytest.raises(ValueError, match="do not describe"):
        cache.store(os.stat(path), hash_bytes(b"a" * 11))
    assert cache.lookup(os.stat(path)) is None


def test_not_a_regular_file(cache, tmp_path):
    with pytest.raises(IsADirectoryError):
        cache.hash_file(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        cache.hash_file(fifo)
    assert time.monotonic() - start < 5  # refused, not blocked on the open
    with pytest.raises(FileNotFoundError):
        cache.hash_file(tmp_path / "missing")


def test_autov3_none_round_trips(cache, tmp_path):
    path = make(tmp_path / "plain.ckpt", b"p" * 2000)
    forms = cache.hash_file(path)
    assert forms.autov3 is None
    assert HashCache(cache.db).lookup(os.stat(path)) == forms
    st_path = make(tmp_path / "x.safetensors", (2).to_bytes(8, "little") + b"{}" + b"t" * 64)
    st_forms = cache.hash_file(st_path)
    assert st_forms.autov3 == hashlib.sha256(b"t" * 64).hexdigest()
    assert HashCache(cache.db).lookup(os.stat(st_path)) == st_forms
    assert isinstance(st_forms, HashForms)


def test_batch_groups_stores_and_writes_them_all(cache, tmp_path, monkeypatch):
    import comfyvn.library.hashcache as hc

    monkeypatch.setattr(hc, "FLUSH_EVERY", 4)
    transactions = []
    real = cache.store_many

    def counting(items):
        items = list(items)
        transactions.append(len(items))
        real(items)

    monkeypatch.setattr(cache, "store_many", counting)
    paths = [make(tmp_path / f"s{i}.bin", bytes([i]) * 50) for i in range(10)]
    with cache.batch():
        for path in paths:
            cache.hash_file(path)
        assert transactions == [4, 4]  # two full groups written, two rows pending
    assert transactions == [4, 4, 2]
    fresh = HashCache(cache.db)
    assert all(fresh.lookup(os.stat(p)) is not None for p in paths)


def test_batch_writes_pending_rows_when_the_block_raises(cache, tmp_path):
    path = make(tmp_path / "a.bin", b"a" * 10)
    with pytest.raises(RuntimeError), cache.batch():
        cache.hash_file(path)
        raise RuntimeError("scan interrupted")
    assert HashCache(cache.db).lookup(os.stat(path)) is not None


def test_device_and_inode_numbers_with_the_top_bit_set(cache, tmp_path):
    """st_dev / st_ino are unsigned 64-bit; SQLite integers are signed."""
    st = os.stat(make(tmp_path / "a.bin", b"n" * 10))
    forms = hash_bytes(b"n" * 10)
    base = list(st[:10])
    high = []
    for dev, ino in ((2**64 - 1, 2**64 - 5), (2**63, 2**63 + 1), (7, 2**63 - 1)):
        values = base[:]
        values[1], values[2] = ino, dev  # st_ino, st_dev
        high.append(os.stat_result(values, {"st_mtime_ns": st.st_mtime_ns}))
    for s in high[:2]:
        cache.store(s, forms)
    assert [cache.lookup(s) for s in high] == [forms, forms, None]
    assert cache.lookup_many(high) == [forms, forms, None]
    assert cache.known_many(high) == [True, True, False]
