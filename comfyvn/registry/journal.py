"""The move journal (``file_intents``): every file operation of the registry is written here,
with its owning process, before it happens, and forgotten in the transaction that commits it.

What a killed process leaves behind is what :class:`comfyvn.registry.recovery.Recovery`
finishes or undoes; this module owns every statement on the table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

from ..fsutil import owner_alive
from ..store import Database

log = logging.getLogger("comfyvn.studio.core.asset_registry")


def is_abandoned(intent: Any, taken_over: Collection[str] = ()) -> bool:
    """Whether a journalled operation was left behind: its process is gone (decidable for a process
    on this host only: another host's counts as alive), or it moves one of the files named in
    ``taken_over``.  Those are staged files whose claim the caller has taken over after its lease
    ran out (see :meth:`comfyvn.ingest.queue.AssetIngestQueue.recover`): their old holder, whatever
    its host, can no longer commit them, so its moves are undone like a dead process's."""
    if not owner_alive(intent["owner"]):
        return True
    return intent["op"] == "move" and bool(intent["src"]) and os.path.basename(intent["src"]) in taken_over


class MoveJournal:
    """The journalled file operations of one project."""

    def __init__(self, db: Database, project_id: str) -> None:
        self.db = db
        self.project_id = project_id

    def record(self, conn, uid: str, op: str, src: str | None, dest: str, now: float, owner: str) -> int:
        """Journal one operation (``copy``, ``move``, ``adopt`` or ``remove``) in ``conn``'s transaction; its id."""
        return conn.execute(
            "INSERT INTO file_intents(project_id, uid, op, src, dest, created_at, owner) VALUES (?,?,?,?,?,?,?)"
            " RETURNING id", (self.project_id, uid, op, src, dest, now, owner)).fetchone()[0]

    @staticmethod
    def forget(conn, intent: int) -> None:
        """Drop one entry inside the transaction that commits its operation."""
        conn.execute("DELETE FROM file_intents WHERE id = ?", (intent,))

    def drop(self, intents: list[int]) -> None:
        """Drop entries in a transaction of their own (best effort: recover() retries)."""
        if not intents:
            return
        try:
            with self.db.transaction() as conn:
                conn.executemany("DELETE FROM file_intents WHERE id = ?", [(i,) for i in intents])
        except Exception:
            log.exception("could not clear file intents %s; recover() will retry", intents)

    def entries(self) -> list:
        """Every journalled operation of the project, oldest first."""
        return self.db.query("SELECT * FROM file_intents WHERE project_id = ? ORDER BY id", (self.project_id,))

    def abandoned(self, taken_over: Collection[str] = ()) -> list[dict]:
        """The operations left behind (see :func:`is_abandoned`)."""
        return [dict(r) for r in self.entries() if is_abandoned(r, taken_over)]
