"""Named, ordered schema migrations.

Each entry is ``(name, sql)``; applied names are recorded in ``schema_migrations`` so every
process opening the workspace brings it to the same shape exactly once.  Append new entries
at the end of their section; never edit one that has shipped.
"""

from collections.abc import Mapping

from ..library.schema import LIBRARY_MIGRATIONS
from ..licences.schema import LICENCE_MIGRATIONS

# an entry's SQL is one text for both engines, or {engine: text} where their DDL differs
MIGRATIONS: list[tuple[str, str | Mapping[str, str]]] = [
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
    (
        # who journalled a file move: recover() leaves a live process's intents alone
        "registry.002_intent_owner",
        """
        ALTER TABLE file_intents ADD COLUMN owner TEXT;
        CREATE INDEX file_intents_project ON file_intents(project_id, id);
        CREATE INDEX thumbnails_unready ON thumbnails(project_id, status) WHERE status != 'ready';
        """,
    ),
    (
        # covering indexes for list_assets: type/licence filters in created_at order with the uid
        # tie-break (keyset cursors) and the tag probe answered from the index alone; hash
        # lookups go through the primary key (uid = first 16 hex digits of the hash)
        "registry.003_query_indexes",
        """
        DROP INDEX IF EXISTS file_intents_project;
        DROP INDEX IF EXISTS assets_hash;
        DROP INDEX IF EXISTS assets_type_created;
        DROP INDEX IF EXISTS assets_license_created;
        DROP INDEX IF EXISTS assets_created;
        CREATE INDEX assets_type_created ON assets(project_id, type, created_at, uid);
        CREATE INDEX assets_license_created ON assets(project_id, license, created_at, uid);
        CREATE INDEX assets_type_license_created ON assets(project_id, type, license, created_at, uid);
        CREATE INDEX assets_created ON assets(project_id, created_at, uid);
        """,
    ),
    (
        # licences as structured rights (issue 13): the terms (JSON) and the queried ones as indexed
        # columns.  commercial_rank is the place in none(0) < image < rent-civit < rent < sell(4);
        # booleans are 0/1, NULL = not stated.  rights_version 0 marks rows registered before this
        # migration: AssetRegistry.recover() re-derives their rights once (comfyvn.rights.asset_rights)
        "registry.004_rights",
        """
        ALTER TABLE assets ADD COLUMN license_terms TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE assets ADD COLUMN commercial_rank INTEGER;
        ALTER TABLE assets ADD COLUMN credit_required INTEGER;
        ALTER TABLE assets ADD COLUMN derivatives_allowed INTEGER;
        ALTER TABLE assets ADD COLUMN license_known INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE assets ADD COLUMN rights_version INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX assets_commercial_created ON assets(project_id, commercial_rank, created_at, uid);
        CREATE INDEX assets_credit_created ON assets(project_id, credit_required, created_at, uid);
        CREATE INDEX assets_derivatives_created ON assets(project_id, derivatives_allowed, created_at, uid);
        CREATE INDEX assets_license_known_created ON assets(project_id, license_known, created_at, uid);
        CREATE INDEX assets_rights_stale ON assets(project_id, rights_version) WHERE rights_version = 0;
        """,
    ),
    (
        # the gallery's other sorts (recently changed, largest, type, path), alone and after a type
        # filter, as index walks with the uid tie-break (keyset cursors): at a million assets each
        # was a sort of every matching row (0.6-2.6 s per page), now a page is read in order
        "registry.005_sort_indexes",
        """
        CREATE INDEX assets_updated ON assets(project_id, updated_at, uid);
        CREATE INDEX assets_bytes ON assets(project_id, bytes, uid);
        CREATE INDEX assets_type_uid ON assets(project_id, type, uid);
        CREATE INDEX assets_type_updated ON assets(project_id, type, updated_at, uid);
        CREATE INDEX assets_type_bytes ON assets(project_id, type, bytes, uid);
        CREATE INDEX assets_type_path ON assets(project_id, type, path, uid);
        """,
    ),
    (
        # free text (``text=``, a substring of search_text) through an index instead of a scan of
        # every row.  SQLite: an FTS5 trigram index over assets.search_text (external content: no
        # copy of the text; rowid = the asset row's rowid, which VACUUM keeps as assets has indexes),
        # filled now and kept in step by triggers in the writer's transaction (every writer, every
        # process, transfers included); case_sensitive 1: the text is already lower-cased, so a match
        # is exactly a substring (no writer may use INSERT OR REPLACE on assets: the row it replaces
        # fires no delete trigger).  PostgreSQL: pg_trgm's GIN index, which the LIKE itself uses (3+ characters).
        "registry.006_fulltext",
        {
            "sqlite": """
            CREATE VIRTUAL TABLE assets_fts USING fts5(search_text, content='assets', content_rowid='rowid',
                tokenize='trigram case_sensitive 1', columnsize=0);
            INSERT INTO assets_fts(assets_fts) VALUES ('rebuild');
            CREATE TRIGGER assets_fts_insert AFTER INSERT ON assets BEGIN
                INSERT INTO assets_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END;
            CREATE TRIGGER assets_fts_delete AFTER DELETE ON assets BEGIN
                INSERT INTO assets_fts(assets_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
            END;
            CREATE TRIGGER assets_fts_update AFTER UPDATE OF search_text ON assets
                WHEN old.search_text IS NOT new.search_text BEGIN
                INSERT INTO assets_fts(assets_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text);
                INSERT INTO assets_fts(rowid, search_text) VALUES (new.rowid, new.search_text);
            END;
            """,
            # a trusted extension (the database owner creates it), once per database: its operator
            # class is named in the schema it lives in, whichever schema this workspace's tables are in
            "postgresql": """
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
            DO $$ BEGIN
                EXECUTE format('CREATE INDEX assets_search_trgm ON assets USING gin (search_text %I.gin_trgm_ops)',
                    (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                     WHERE e.extname = 'pg_trgm'));
            END $$;
            """,
        },
    ),
    (
        # a tag's rows carry copies of their asset's type, licence and created_at (the default sort),
        # so a tag filter (with type and licence) reads a page as ONE index range in page order:
        # before, PostgreSQL hash-joined the tag's rows with the type + licence range and sorted them
        # (page p95 32-55 ms at a million assets).  The database keeps the copies: a trigger follows every
        # change of the asset's columns, and a tag row inserted without them gets them from its asset
        # (the registry's write path inserts them from the asset row: Records.write_tags)
        "registry.007_tag_copies",
        {
            "sqlite": """
            ALTER TABLE asset_tags ADD COLUMN type TEXT;
            ALTER TABLE asset_tags ADD COLUMN license TEXT;
            ALTER TABLE asset_tags ADD COLUMN created_at REAL;
            UPDATE asset_tags SET type = a.type, license = a.license, created_at = a.created_at FROM assets a
                WHERE a.project_id = asset_tags.project_id AND a.uid = asset_tags.uid;
            CREATE INDEX asset_tags_type_license_created ON asset_tags(project_id, tag, type, license, created_at, uid);
            CREATE INDEX asset_tags_created ON asset_tags(project_id, tag, created_at, uid, type, license);
            CREATE TRIGGER assets_tag_copies_update AFTER UPDATE OF type, license, created_at ON assets
                WHEN OLD.type IS NOT NEW.type OR OLD.license IS NOT NEW.license OR OLD.created_at IS NOT NEW.created_at
            BEGIN
                UPDATE asset_tags SET type = NEW.type, license = NEW.license, created_at = NEW.created_at
                    WHERE project_id = NEW.project_id AND uid = NEW.uid;
            END;
            CREATE TRIGGER asset_tags_copies_insert AFTER INSERT ON asset_tags WHEN NEW.type IS NULL
            BEGIN
                UPDATE asset_tags SET (type, license, created_at) = (
                    SELECT a.type, a.license, a.created_at FROM assets a
                    WHERE a.project_id = NEW.project_id AND a.uid = NEW.uid)
                    WHERE project_id = NEW.project_id AND tag = NEW.tag AND uid = NEW.uid;
            END;
            """,
            "postgresql": """
            ALTER TABLE asset_tags ADD COLUMN type TEXT, ADD COLUMN license TEXT, ADD COLUMN created_at DOUBLE PRECISION;
            UPDATE asset_tags t SET type = a.type, license = a.license, created_at = a.created_at FROM assets a
                WHERE a.project_id = t.project_id AND a.uid = t.uid;
            CREATE INDEX asset_tags_type_license_created ON asset_tags(project_id, tag, type, license, created_at, uid);
            CREATE INDEX asset_tags_created ON asset_tags(project_id, tag, created_at, uid, type, license);
            CREATE FUNCTION comfyvn_assets_tag_copies_update() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE asset_tags SET type = NEW.type, license = NEW.license, created_at = NEW.created_at
                    WHERE project_id = NEW.project_id AND uid = NEW.uid;
                RETURN NULL;
            END $$;
            CREATE TRIGGER assets_tag_copies_update AFTER UPDATE OF type, license, created_at ON assets FOR EACH ROW
                WHEN (OLD.type IS DISTINCT FROM NEW.type OR OLD.license IS DISTINCT FROM NEW.license
                      OR OLD.created_at IS DISTINCT FROM NEW.created_at)
                EXECUTE FUNCTION comfyvn_assets_tag_copies_update();
            CREATE FUNCTION comfyvn_asset_tags_copies_insert() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                SELECT a.type, a.license, a.created_at INTO NEW.type, NEW.license, NEW.created_at FROM assets a
                    WHERE a.project_id = NEW.project_id AND a.uid = NEW.uid;
                RETURN NEW;
            END $$;
            CREATE TRIGGER asset_tags_copies_insert BEFORE INSERT ON asset_tags FOR EACH ROW WHEN (NEW.type IS NULL)
                EXECUTE FUNCTION comfyvn_asset_tags_copies_insert();
            """,
        },
    ),
    # --- ingest (issue 3) -----------------------------------------------------------------
    (
        "ingest.001_jobs",
        """
        CREATE TABLE ingest_jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL UNIQUE,
            project_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            status TEXT NOT NULL,
            source_path TEXT,
            remote_url TEXT,
            dest_relative TEXT,
            asset_type_hint TEXT,
            pin INTEGER NOT NULL DEFAULT 0,
            terms_acknowledged INTEGER NOT NULL DEFAULT 0,
            digest TEXT,
            expected_sha256 TEXT,
            bytes INTEGER,
            bytes_done INTEGER NOT NULL DEFAULT 0,
            bytes_total INTEGER,
            filename TEXT,
            staging_path TEXT,
            dedup_of TEXT,
            existing_uid TEXT,
            asset_uid TEXT,
            notes TEXT NOT NULL DEFAULT '[]',
            error TEXT,
            errors TEXT NOT NULL DEFAULT '[]',
            attempts INTEGER NOT NULL DEFAULT 1,
            metadata TEXT NOT NULL DEFAULT '{}',
            user_metadata TEXT NOT NULL DEFAULT '{}',
            provider_metadata TEXT,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            owner TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE UNIQUE INDEX ingest_jobs_active_digest ON ingest_jobs(project_id, digest)
            WHERE status IN ('staged', 'applying');
        CREATE INDEX ingest_jobs_status ON ingest_jobs(status, seq);
        CREATE INDEX ingest_jobs_provider ON ingest_jobs(provider, seq);
        CREATE INDEX ingest_jobs_active_url ON ingest_jobs(project_id, remote_url)
            WHERE status IN ('queued', 'downloading');
        CREATE TABLE ingest_rate_buckets (
            key TEXT PRIMARY KEY,
            tokens REAL NOT NULL,
            updated_at REAL NOT NULL,
            blocked_until REAL NOT NULL DEFAULT 0
        );
        """,
    ),
    (
        # staged bytes written behind (no fsync at enqueue): the boot they were written in.  apply()
        # fsyncs them in that boot, and re-hashes them after a restart of the machine.
        "ingest.002_staged_boot",
        "ALTER TABLE ingest_jobs ADD COLUMN staged_boot TEXT;",
    ),
    (
        # a claim's lease (epoch seconds): the owning worker renews it while it works, and recovery
        # takes back a claim whose lease ran out whatever its host (NULL: no lease, owner liveness only)
        "ingest.003_claim_lease",
        "ALTER TABLE ingest_jobs ADD COLUMN lease_until REAL;",
    ),
    # --- hooks / webhooks (issue 4) ---------------------------------------------------------
    (
        "hooks.001_webhooks",
        """
        CREATE TABLE webhooks (
            id TEXT PRIMARY KEY,
            event TEXT NOT NULL,
            url TEXT NOT NULL,
            secret TEXT,
            start_after_id INTEGER NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE INDEX webhooks_event ON webhooks(event);
        CREATE TABLE webhook_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
            event_id INTEGER NOT NULL,
            delivery_id TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            lease_owner TEXT,
            lease_until REAL,
            last_status INTEGER,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (webhook_id, event_id)
        );
        CREATE INDEX webhook_outbox_due ON webhook_outbox(status, next_attempt_at);
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
            delivery_id TEXT NOT NULL,
            event_id INTEGER NOT NULL,
            event TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            status_code INTEGER,
            error TEXT,
            duration_ms REAL NOT NULL,
            at REAL NOT NULL,
            next_attempt_at REAL
        );
        CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, id);
        CREATE TABLE webhook_cursor (
            name TEXT PRIMARY KEY,
            last_event_id INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    ),
    (
        # webhook secrets at rest: AES-GCM sealed with config/secrets.key (comfyvn.hooks.secretbox);
        # the plain-text ``secret`` column is emptied by WebhookManager/WebhookDispatcher on open
        "hooks.002_webhook_secret_sealed",
        "ALTER TABLE webhooks ADD COLUMN secret_sealed TEXT;",
    ),
    # --- library (hash cache of files known in place)
    *LIBRARY_MIGRATIONS,
    # --- licences (overrides with their paper trail)
    *LICENCE_MIGRATIONS,
]
