"""Removing an asset: its row, tags and thumbnail rows go in one journalled transaction; its
file and sidecar then go to the workspace trash (or are deleted), its thumbnails are deleted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ..config import Workspace
from ..fsutil import owner_token
from ..store import Database
from .journal import MoveJournal
from .listeners import HOOK_ASSET_REMOVED, Listeners
from .paths import AssetsRoot
from .previews import Previews
from .records import Records, meta_view
from .sidecars import Sidecars


class Removal:
    """Removal of assets of one project."""

    def __init__(self, ws: Workspace, db: Database, project_id: str, root: AssetsRoot, records: Records,
                 sidecars: Sidecars, previews: Previews, listeners: Listeners, journal: MoveJournal) -> None:
        self.ws = ws
        self.db = db
        self.project_id = project_id
        self.root = root
        self.records = records
        self.sidecars = sidecars
        self.previews = previews
        self.listeners = listeners
        self.journal = journal

    def remove(self, uid: str, *, delete_files: bool = False) -> dict:
        """Remove an asset (see :meth:`AssetRegistry.remove_asset_record`); the removed record."""
        fired: list[tuple[str, dict]] = []
        now = time.time()
        with self.db.transaction() as conn:
            rec = self.records.require(uid, conn)
            trash = None if delete_files else str(self.trash_dir(uid, now))
            intent = self.journal.record(conn, uid, "remove", trash, rec["path"], now, owner_token())
            conn.execute("DELETE FROM assets WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM asset_tags WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM thumbnails WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            payload = {"uid": uid, "type": rec["type"], "path": str(self.root.abs(rec["path"])),
                       "sidecar": str(self.root.sidecar_path(rec["path"]))}
            fired.append(self.listeners.emit(conn, HOOK_ASSET_REMOVED, payload,
                                             {"trashed_to": trash, "deleted_files": delete_files,
                                              "bytes": rec["bytes"], "meta": meta_view(rec)}))
        self.finish(rec["uid"], rec["path"], trash)
        self.journal.drop([intent])
        mirror = self.sidecars.legacy_path(rec["path"])
        if mirror is not None:
            mirror.unlink(missing_ok=True)
        self.listeners.run(fired)
        out = self.records.public(rec)
        out.update(trashed_to=trash, trashed=trash is not None, removed=True)
        return out

    def trash_dir(self, uid: str, now: float) -> Path:
        return self.ws.trash_dir / self.project_id / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}_{uid}"

    def finish(self, uid: str, rel: str, trash: str | None) -> None:
        """Move (or delete) a removed asset's file and sidecar and delete its thumbnails; a library
        file registered in place stays where it lies (only its sidecar goes)."""
        file_path, sidecar = self.root.abs(rel), self.root.sidecar_path(rel)
        for path in ((sidecar,) if self.root.in_place(rel) else (file_path, sidecar)):
            if not path.exists():
                continue
            if trash:
                Path(trash).mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(Path(trash) / path.name))
            else:
                path.unlink(missing_ok=True)
        self.previews.delete_files(uid)
