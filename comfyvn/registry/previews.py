"""The registry's side of thumbnails and waveforms: which to make, their status rows, the worker.

The pictures themselves are made by :mod:`comfyvn.studio.core.thumbnails`, always on its
worker thread; this module records ``pending``/``ready``/``failed`` per size in the
``thumbnails`` table and serves only ready files through the confined reader.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..config import Workspace, get_setting
from ..confined import open_confined
from ..fsutil import UnsafePathError
from ..store import Database
from ..studio.core.thumbnails import (
    WAVEFORM,
    get_thumbnailer,
    max_pixels_setting,
    preview_kind,
    write_preview,
)
from .paths import AssetsRoot
from .records import Records

log = logging.getLogger("comfyvn.studio.core.asset_registry")
_UPSERT_THUMBNAIL = ("ON CONFLICT(project_id, uid, size) DO UPDATE SET path = excluded.path, status = excluded.status,"
                     " error = excluded.error, updated_at = excluded.updated_at")


def thumb_rel(uid: str, size: str) -> str:
    """A thumbnail's path relative to the thumbnail root (``ab/abcd…_256.png``, ``…_waveform.json``)."""
    ext = "json" if size == WAVEFORM else "png"
    return f"{uid[:2]}/{uid}_{size}.{ext}"


class Previews:
    """The thumbnails and waveforms of one project."""

    def __init__(self, ws: Workspace, db: Database, project_id: str, root: AssetsRoot, thumbnails_root: Path,
                 records: Records, *, make_thumbnails: bool) -> None:
        self.ws = ws
        self.db = db
        self.project_id = project_id
        self.root = root
        self.thumbnails_root = thumbnails_root
        self.records = records
        self.make_thumbnails = make_thumbnails

    def preview_for(self, uid: str, rel: str) -> dict:
        """The ``preview`` of a new record: its kind and where its thumbnails (or waveform) will be."""
        kind = preview_kind(rel)
        if kind == "image":
            sizes = [str(s) for s in get_setting("registry.thumbnail_sizes", [256, 512], self.ws)]
            return {"kind": "image", "thumbnails": {s: thumb_rel(uid, s) for s in sizes}}
        if kind == "audio":
            return {"kind": "audio", "waveform": thumb_rel(uid, WAVEFORM)}
        return {"kind": None}

    def mark(self, conn, rec: dict, status: str) -> None:
        """Set the status rows of every thumbnail of ``rec`` (inside the caller's transaction)."""
        preview = rec["preview"]
        sizes = list(preview.get("thumbnails", {})) or ([WAVEFORM] if preview.get("waveform") else [])
        conn.executemany(
            "INSERT INTO thumbnails(project_id, uid, size, path, status, error, updated_at) VALUES (?,?,?,?,?,NULL,?)"
            f" {_UPSERT_THUMBNAIL}",
            [(self.project_id, rec["uid"], s, thumb_rel(rec["uid"], s), status, time.time()) for s in sizes])

    def schedule(self, rec: dict) -> None:
        """Make a new asset's thumbnails on the worker (when this registry makes thumbnails)."""
        if not self.make_thumbnails or not rec["preview"].get("kind"):
            return
        get_thumbnailer().submit(self.make, rec["uid"], rec["path"], rec["preview"])

    def resume(self, rows: list) -> int:
        """Make again the thumbnails of asset rows (``uid``, ``path``, ``preview`` JSON) left pending;
        returns how many (0 when this registry makes no thumbnails)."""
        if not self.make_thumbnails:
            return 0
        for row in rows:
            get_thumbnailer().submit(self.make, row["uid"], row["path"], json.loads(row["preview"]))
        return len(rows)

    def make(self, uid: str, rel: str, preview: dict) -> None:
        """Make an asset's thumbnails (on the worker thread) and record each one's status."""
        sizes = list(preview.get("thumbnails", {})) or [WAVEFORM]
        src = self.root.abs(rel)
        max_pixels = max_pixels_setting(self.ws)  # this workspace's cap, not the process's current one
        for size in sizes:
            dest = self.thumbnails_root / thumb_rel(uid, size)
            try:
                write_preview(src, dest, size, max_pixels=max_pixels)
                status, error = "ready", None
            except Exception as exc:  # a broken image is recorded, never listed as present
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                log.warning("thumbnail %s for %s failed: %s", size, uid, error)
            with self.db.transaction() as conn:
                hit = conn.execute("UPDATE thumbnails SET status = ?, error = ?, updated_at = ? WHERE project_id = ?"
                                   " AND uid = ? AND size = ?",
                                   (status, error, time.time(), self.project_id, uid, size)).rowcount
                if not hit:  # the asset was removed meanwhile: leave no orphan preview behind
                    dest.unlink(missing_ok=True)

    def regenerate(self, uid: str) -> None:
        """Make an asset's thumbnails (or waveform) again, off the caller's thread."""
        rec = self.records.require(uid)
        if not rec["preview"].get("kind"):
            return
        with self.db.transaction() as conn:
            self.mark(conn, rec, "pending")
        get_thumbnailer().submit(self.make, rec["uid"], rec["path"], rec["preview"])

    def set_image(self, uid: str, image: Path) -> dict[str, dict]:
        """Make an asset's thumbnails from another image (a model's preview from its provider), now,
        on the caller's thread; the row's preview and status rows follow, its sidecar is marked
        pending (the caller syncs it).  Returns :meth:`status`."""
        rec = self.records.require(uid)
        sizes = [str(s) for s in get_setting("registry.thumbnail_sizes", [256, 512], self.ws)]
        preview = {"kind": "image", "thumbnails": {s: thumb_rel(uid, s) for s in sizes}, "source": "provider"}
        max_pixels = max_pixels_setting(self.ws)
        done: list[tuple[str, str, str | None]] = []
        for size in sizes:
            try:
                write_preview(Path(image), self.thumbnails_root / thumb_rel(uid, size), size, max_pixels=max_pixels)
                done.append((size, "ready", None))
            except Exception as exc:  # a broken preview is recorded, never listed as present
                done.append((size, "failed", f"{type(exc).__name__}: {exc}"))
        with self.db.transaction() as conn:
            conn.execute("UPDATE assets SET preview = ?, sidecar_pending = 1 WHERE project_id = ? AND uid = ?",
                         (json.dumps(preview), self.project_id, rec["uid"]))
            conn.executemany(
                "INSERT INTO thumbnails(project_id, uid, size, path, status, error, updated_at) VALUES (?,?,?,?,?,?,?)"
                f" {_UPSERT_THUMBNAIL}",
                [(self.project_id, uid, s, thumb_rel(uid, s), st, err, time.time()) for s, st, err in done])
        return self.status(uid)

    def status(self, uid: str) -> dict[str, dict]:
        """``{size: {"path", "status": pending|ready|failed, "error"}}`` for an asset."""
        rows = self.db.query("SELECT size, path, status, error FROM thumbnails WHERE project_id = ? AND uid = ?",
                             (self.project_id, uid))
        return {r["size"]: {"path": str(self.thumbnails_root / r["path"]), "status": r["status"],
                            "error": r["error"]} for r in rows}

    def resolve(self, uid: str, size: int | str = 256) -> Path | None:
        """The cached thumbnail (or ``"waveform"`` JSON) of an asset, or None if not (yet) made."""
        row = self.db.query_one("SELECT path, status FROM thumbnails WHERE project_id = ? AND uid = ? AND size = ?",
                                (self.project_id, uid, str(size)))
        if row is None or row["status"] != "ready":
            return None
        path = self.thumbnails_root / row["path"]
        try:  # only a regular file below the thumbnails root, never through a symlink
            fh, _ = open_confined(self.thumbnails_root, row["path"], what="thumbnail")
        except (OSError, UnsafePathError):
            return None
        fh.close()
        return path

    def delete_files(self, uid: str) -> None:
        """Delete an asset's thumbnail files (its rows go with the asset's row)."""
        for thumb in self.thumbnails_root.glob(f"{uid[:2]}/{uid}_*"):
            thumb.unlink(missing_ok=True)

    @staticmethod
    def wait(timeout: float | None = 30.0) -> bool:
        """Block until this process has no thumbnail pending (True) or ``timeout`` passed (False)."""
        return get_thumbnailer().wait(timeout)
