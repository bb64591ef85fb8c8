"""Schema migrations of the licence tables (imports nothing, so the store may import it)."""

from __future__ import annotations

OVERRIDES_MIGRATION: tuple[str, str] = (
    # the paper trail of licence decisions people record for an asset: append-only, one row per
    # decision ("set" or "cleared"); an asset's current override is its newest row, when that is a "set"
    "licences.001_overrides",
    """
    CREATE TABLE licence_overrides (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id TEXT NOT NULL,
        uid TEXT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('set', 'cleared')),
        license TEXT,
        terms TEXT NOT NULL DEFAULT '{}',
        covers_sources INTEGER NOT NULL DEFAULT 0,
        note TEXT NOT NULL,
        decided_by TEXT NOT NULL,
        decided_at REAL NOT NULL
    );
    CREATE INDEX licence_overrides_asset ON licence_overrides(project_id, uid, id);
    """,
)

LICENCE_MIGRATIONS: list[tuple[str, str]] = [OVERRIDES_MIGRATION]
