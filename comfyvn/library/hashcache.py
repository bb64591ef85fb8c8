"""Persistent hash cache: (device, inode, size, mtime_ns) -> every hash form of the file.

A rescan of an unchanged library then costs one ``stat`` per file and no read.  Rows live in the
workspace database (table ``library_hash_cache``, migration ``library.001_hash_cache``), so every
process of a workspace shares them.

Rules:

* A key is valid only while all four parts match; any change (new content written in place, a
  file replaced by a rename, another disk) is a miss, and the new hashes replace the row.
* A file is hashed through one descriptor and ``fstat``-ed before and after: if it changed while
  being read, :class:`FileChangedError` is raised and nothing is stored.
* "Racy" files are hashed but not stored: a file modified less than :data:`RACY_WINDOW_NS` before
  its read started could be modified again within the same timestamp tick (ext4 stamps with a
  coarse clock, FAT with 2 s) without its mtime changing, which would make a stale row look valid.
  They are stored by a later scan once they are old enough (as git does for its index).
* Tools that restore an old mtime after rewriting a file of the same size defeat any stat cache;
  a full re-hash (``HashCache.hash_file(path, refresh=True)``) is the way out.
"""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import Conflict
from ..hashforms import HashForms, hash_fd, is_safetensors_name
from ..store import Database, get_database, open_store

RACY_WINDOW_NS = 2_000_000_000
_BATCH = 500  # inodes per query in lookup_many (SQLite's old default limit is 999 parameters)
FLUSH_EVERY = 500  # rows per write transaction inside batch()
_COLUMNS = "dev, ino, size, mtime_ns, sha256, blake3, crc32, autov1, autov3"
# a changed file replaces its inode's row
_UPSERT = "ON CONFLICT(dev, ino) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in [*_COLUMNS.split(", ")[2:], "hashed_at"])

Key = tuple[int, int, int, int]
_S64, _U64 = 1 << 63, 1 << 64


class FileChangedError(Conflict, OSError):
    """The file changed while it was being hashed; nothing was stored.  Hash it again later."""


def cache_key(st: os.stat_result) -> Key:
    """(device, inode, size, mtime_ns) as SQLite stores them: device and inode numbers are
    unsigned 64-bit (some network and FUSE file systems use the top bit), SQLite integers signed."""
    dev, ino = st.st_dev, st.st_ino
    return (dev - _U64 if dev >= _S64 else dev, ino - _U64 if ino >= _S64 else ino, st.st_size, st.st_mtime_ns)


class HashCache:
    """Hash forms of files, remembered by (device, inode, size, mtime_ns).

    ``hits``, ``misses``, ``files_read``, ``bytes_read`` and ``not_stored_racy`` count what this
    instance did (tests assert "no file read" through them).
    """

    def __init__(self, db: Database | str | os.PathLike | None = None, *,
                 racy_window_ns: int = RACY_WINDOW_NS) -> None:
        if db is None:
            from ..config import workspace

            db = open_store(workspace())
        self.db = db if isinstance(db, Database) else get_database(Path(db))
        self.racy_window_ns = racy_window_ns
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.files_read = 0
        self.bytes_read = 0
        self.not_stored_racy = 0
        self._batching = 0
        self._pending: list[tuple[os.stat_result, HashForms]] = []

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, st: os.stat_result) -> HashForms | None:
        """The cached forms of the file ``st`` describes, or None (never cached, or changed)."""
        key = cache_key(st)
        row = self.db.query_one(f"SELECT {_COLUMNS} FROM library_hash_cache WHERE dev = ? AND ino = ?", key[:2])
        forms = _valid(row, key)
        self._count(forms is not None)
        return forms

    def lookup_many(self, stats: Sequence[os.stat_result]) -> list[HashForms | None]:
        """:meth:`lookup` of many files, a few hundred per query."""
        keys = [cache_key(st) for st in stats]
        rows = self._rows(keys, _COLUMNS)
        out = [_valid(rows.get(key[:2]), key) for key in keys]
        self._count_many(sum(forms is not None for forms in out), len(out))
        return out

    def known_many(self, stats: Sequence[os.stat_result]) -> list[bool]:
        """Whether each file is cached under its current key (a rescan's fast path: the forms
        are neither fetched nor built; the rows' (ino, size, mtime_ns) triples are matched)."""
        keys = [cache_key(st) for st in stats]
        cur = self.db.conn.cursor()
        cur.row_factory = None
        rows: dict[int, set[tuple]] = {}
        try:
            for dev, inos in _by_device(keys).items():
                found = rows[dev] = set()
                for start in range(0, len(inos), _BATCH):
                    batch = inos[start:start + _BATCH]
                    cur.execute("SELECT ino, size, mtime_ns FROM library_hash_cache WHERE dev = ? AND ino IN "
                                f"({','.join('?' * len(batch))})", (dev, *batch))
                    found.update(cur.fetchall())
        finally:
            cur.close()
        out = [key[1:] in rows[key[0]] for key in keys]
        self._count_many(sum(out), len(out))
        return out

    def _rows(self, keys: Sequence[Key], columns: str) -> dict[tuple[int, int], tuple]:
        """The rows of the inodes of ``keys`` by (dev, ino): one ``dev = ? AND ino IN (...)`` query
        per device and :data:`_BATCH` inodes, so SQLite seeks the primary key for each (a
        row-value ``(dev, ino) IN (VALUES ...)`` would scan the whole table instead)."""
        found: dict[tuple[int, int], tuple] = {}
        cur = self.db.conn.cursor()
        cur.row_factory = None  # plain tuples: a rescan fetches one per file
        try:
            for dev, inos in _by_device(keys).items():
                for start in range(0, len(inos), _BATCH):
                    batch = inos[start:start + _BATCH]
                    cur.execute(f"SELECT {columns} FROM library_hash_cache WHERE dev = ? AND ino IN "
                                f"({','.join('?' * len(batch))})", (dev, *batch))
                    for row in cur:
                        found[(row[0], row[1])] = row
        finally:
            cur.close()
        return found

    def _count_many(self, hits: int, total: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += total - hits

    # -- stores ----------------------------------------------------------------------------
    def store(self, st: os.stat_result, forms: HashForms) -> None:
        """Remember ``forms`` for the file ``st`` describes (replacing what its inode had).

        Inside :meth:`batch` the row is written with others, :data:`FLUSH_EVERY` per transaction."""
        with self._lock:
            if self._batching:
                self._pending.append((st, forms))
                if len(self._pending) < FLUSH_EVERY:
                    return
                items, self._pending = self._pending, []
            else:
                items = [(st, forms)]
        self.store_many(items)

    @contextmanager
    def batch(self) -> Iterator[HashCache]:
        """Group the stores made inside (a scan of many small files: one transaction per
        :data:`FLUSH_EVERY` files instead of one per file).  Rows still pending are written on
        exit, also when the block raises: each row is a fact about one file on its own."""
        with self._lock:
            self._batching += 1
        try:
            yield self
        finally:
            with self._lock:
                self._batching -= 1
                items, self._pending = (self._pending, []) if not self._batching else ([], self._pending)
            self.store_many(items)

    def store_many(self, items: Iterable[tuple[os.stat_result, HashForms]]) -> None:
        rows = []
        now = time.time()
        for st, forms in items:
            if forms.size != st.st_size:
                raise ValueError(f"hash forms of {forms.size} bytes do not describe a file of {st.st_size} bytes")
            rows.append((*cache_key(st), forms.sha256, forms.blake3, forms.crc32, forms.autov1, forms.autov3, now))
        if not rows:
            return
        with self.db.transaction() as conn:
            conn.executemany(f"INSERT INTO library_hash_cache({_COLUMNS}, hashed_at) "
                             f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {_UPSERT}", rows)

    # -- hashing through the cache -------------------------------------------------------------
    def hash_file(self, path: str | os.PathLike, *, safetensors: bool | None = None, refresh: bool = False,
                  on_bytes: Callable[[int], None] | None = None) -> HashForms:
        """Every hash form of the file at ``path``: from the cache after one ``stat`` when its key
        is unchanged, else read once (and stored unless racy).  ``refresh=True`` re-reads anyway."""
        st = os.stat(path)
        _require_regular(path, st)  # before open(): opening a FIFO would block
        if not refresh:
            cached = self.lookup(st)
            if cached is not None:
                return cached
        if safetensors is None:
            safetensors = is_safetensors_name(path)
        # O_NONBLOCK: a FIFO swapped in after the stat cannot block the open (no effect on files)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0))
        try:
            before = os.fstat(fd)
            _require_regular(path, before)
            started_ns = time.time_ns()
            forms = hash_fd(fd, safetensors=safetensors, on_bytes=on_bytes)
            after = os.fstat(fd)
        finally:
            os.close(fd)
        with self._lock:
            self.files_read += 1
            self.bytes_read += forms.size
        if cache_key(after) != cache_key(before) or forms.size != after.st_size:
            raise FileChangedError(f"{os.fspath(path)} changed while it was being hashed "
                                   f"({before.st_size} -> {after.st_size} bytes); hash it again once it is complete")
        if after.st_mtime_ns >= started_ns - self.racy_window_ns:
            with self._lock:
                self.not_stored_racy += 1
        else:
            self.store(after, forms)
        return forms

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "files_read": self.files_read,
                    "bytes_read": self.bytes_read, "not_stored_racy": self.not_stored_racy}

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1


def _by_device(keys: Sequence[Key]) -> dict[int, list[int]]:
    by_dev: dict[int, list[int]] = {}
    for key in keys:
        by_dev.setdefault(key[0], []).append(key[1])
    return by_dev


def _valid(row, key: Key) -> HashForms | None:
    if row is None or (row[0], row[1], row[2], row[3]) != key:
        return None
    return HashForms(size=row[2], sha256=row[4], blake3=row[5], crc32=row[6], autov1=row[7], autov3=row[8])


def _require_regular(path: str | os.PathLike, st: os.stat_result) -> None:
    if not stat_mod.S_ISREG(st.st_mode):
        raise IsADirectoryError(f"{os.fspath(path)} is not a regular file") if stat_mod.S_ISDIR(st.st_mode) \
            else OSError(f"{os.fspath(path)} is not a regular file")
