"""Schema migrations of the library tables (imports nothing, so the store may import it)."""

from __future__ import annotations

HASH_CACHE_MIGRATION: tuple[str, str] = (
    # one row per inode: a file whose size or mtime changed is a miss, and its new hashes replace
    # the row; WITHOUT ROWID keeps the row in the primary-key b-tree (one probe per lookup)
    "library.001_hash_cache",
    """
    CREATE TABLE library_hash_cache (
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        blake3 TEXT NOT NULL,
        crc32 TEXT NOT NULL,
        autov1 TEXT NOT NULL,
        autov3 TEXT,
        hashed_at REAL NOT NULL,
        PRIMARY KEY (dev, ino)
    ) WITHOUT ROWID;
    """,
)

LIBRARY_MIGRATIONS: list[tuple[str, str]] = [HASH_CACHE_MIGRATION]
