"""Named, ordered schema migrations.

Each entry is ``(name, sql)``; applied names are recorded in ``schema_migrations`` so every
process opening the workspace brings it to the same shape exactly once.  Append new entries
at the end of their section; never edit one that has shipped.
"""

MIGRATIONS: list[tuple[str, str]] = [
    # --- core: event log (outbox) -------------------------------------------------------
    (
        "core.001_events",
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            ts REAL NOT NULL,
            project_id TEXT,
            data TEXT NOT NULL
        );
        CREATE INDEX events_topic_id ON events(topic, id);
        """,
    ),
    # --- registry -------------------------------------------------------------------------
    (
        "registry.001_assets",
        """
        CREATE TABLE assets (
            project_id TEXT NOT NULL,
            uid TEXT NOT NULL,
            type TEXT NOT NULL,
            path TEXT NOT NULL,
            hash TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            license TEXT,
            origin TEXT,
            version INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}',
            preview TEXT NOT NULL DEFAULT '{}',
            provenance TEXT NOT NULL DEFAULT '{}',
            search_text TEXT NOT NULL DEFAULT '',
            sidecar_pending INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (project_id, uid)
        );
        CREATE UNIQUE INDEX assets_path ON assets(project_id, path);
        CREATE INDEX assets_hash ON assets(project_id, hash);
        CREATE INDEX assets_type_created ON assets(project_id, type, created_at);
        CREATE INDEX assets_license_created ON assets(project_id, license, created_at);
        CREATE INDEX assets_created ON assets(project_id, created_at);
        CREATE INDEX assets_sidecar_pending ON assets(sidecar_pending) WHERE sidecar_pending = 1;
        CREATE TABLE asset_tags (
            project_id TEXT NOT NULL,
            uid TEXT NOT NULL,
            tag TEXT NOT NULL,
            PRIMARY KEY (project_id, tag, uid)
        ) WITHOUT ROWID;
        CREATE INDEX asset_tags_uid ON asset_tags(project_id, uid);
        CREATE TABLE thumbnails (
            project_id TEXT NOT NULL,
            uid TEXT NOT NULL,
            size TEXT NOT NULL,
            path TEXT,
            status TEXT NOT NULL,
            error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (project_id, uid, size)
        ) WITHOUT ROWID;
        CREATE TABLE file_intents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            project_id TEXT NOT NULL,
            uid TEXT NOT NULL,
            op TEXT NOT NULL,
            src TEXT,
            dest TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        """,
    ),
    # --- ingest (issue 3) -----------------------------------------------------------------
    # --- hooks / webhooks (issue 4) ---------------------------------------------------------
]
