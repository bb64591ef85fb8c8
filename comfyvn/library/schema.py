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

LIBRARY_FILES_MIGRATION: tuple[str, str] = (
    # every file seen under a library root (one asset may have several: byte-identical copies);
    # ``status`` is present | missing; (dev, ino, size, mtime_ns) of the last scan make an unchanged
    # file cost one stat.  The negative cache remembers hashes a provider does not know.
    "library.002_library_files",
    """
    CREATE TABLE library_files (
        project_id TEXT NOT NULL,
        root TEXT NOT NULL,
        rel TEXT NOT NULL,
        uid TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        status TEXT NOT NULL,
        seen_at REAL NOT NULL,
        missing_since REAL,
        PRIMARY KEY (project_id, root, rel)
    );
    CREATE INDEX library_files_sha ON library_files(sha256);
    CREATE INDEX library_files_uid ON library_files(project_id, uid);
    CREATE TABLE library_negative (
        provider TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        asked_at REAL NOT NULL,
        PRIMARY KEY (provider, sha256)
    ) WITHOUT ROWID;
    CREATE TABLE library_identified (
        project_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        provider TEXT NOT NULL,
        ref TEXT NOT NULL,
        identified_at REAL NOT NULL,
        PRIMARY KEY (project_id, uid, provider)
    ) WITHOUT ROWID;
    """,
)

HASH_ALIAS_MIGRATION: tuple[str, str] = (
    # every form a tool displays -> the file's SHA-256 (lower-case hex); looked up by value
    "library.003_hash_aliases",
    """
    CREATE TABLE hash_aliases (
        value TEXT NOT NULL,
        form TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (value, form, sha256)
    ) WITHOUT ROWID;
    CREATE INDEX hash_aliases_sha ON hash_aliases(sha256);
    """,
)

AUTOV3_PENDING_MIGRATION: tuple[str, str] = (
    # contents (by SHA-256) whose AutoV3 the scan's background phase has still to compute; a rescan
    # that finds it empty costs one query, never a pass over library_files
    "library.004_autov3_pending",
    """
    CREATE TABLE library_autov3_pending (
        sha256 TEXT NOT NULL PRIMARY KEY,
        size INTEGER NOT NULL,
        queued_at REAL NOT NULL
    ) WITHOUT ROWID;
    """,
)

FOLDER_FINGERPRINT_MIGRATION: tuple[str, str] = (
    # one row per folder a scan walked: a digest of its entries as last scanned, and its regular
    # files' count and bytes; a folder whose digest is unchanged costs a rescan no library_files
    # row.  ``library_files.dir`` (the folder part of ``rel``, '' at the top) loads one folder's
    # rows; it is NULL for rows written before this migration (the next scan fills it).  A
    # fingerprint '' is never trusted (the folder is compared file by file).
    "library.005_library_folders",
    """
    ALTER TABLE library_files ADD COLUMN dir TEXT;
    CREATE INDEX library_files_dir ON library_files(project_id, root, dir);
    CREATE TABLE library_folders (
        project_id TEXT NOT NULL,
        root TEXT NOT NULL,
        rel_dir TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        files INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (project_id, root, rel_dir)
    );
    """,
)

LIBRARY_MIGRATIONS: list[tuple[str, str]] = [HASH_CACHE_MIGRATION, LIBRARY_FILES_MIGRATION, HASH_ALIAS_MIGRATION,
                                             AUTOV3_PENDING_MIGRATION, FOLDER_FINGERPRINT_MIGRATION]
