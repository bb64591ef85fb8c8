"""Crash recovery: finish or undo what a killed process left behind (run once per process and
project when a registry opens, and by the enforcer), and the one-time rights migration."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

from .. import rights
from ..fsutil import owner_alive, temp_owner
from ..hashing import sha256_file
from ..store import Database
from .journal import MoveJournal, is_abandoned
from .paths import INCOMING_DIR, AssetsRoot
from .previews import Previews
from .records import RIGHTS_VERSION, Records, check_terms, stated_terms
from .removal import Removal
from .sidecars import Sidecars, sidecar_uid

log = logging.getLogger("comfyvn.studio.core.asset_registry")


def stored_terms(rec: dict) -> tuple[dict, dict | None]:
    """The terms a row registered before rights were stored carries (see :meth:`Recovery.rederive_rights`)."""
    prov = rec["provenance"]
    raw, provider = prov.get("provider_metadata"), prov.get("provider")
    meta = {k: v for k, v in rec["meta"].items() if k != "license_terms"}
    try:
        stated = stated_terms(rec["meta"], {})[1]
    except ValueError:  # terms an old version stored in a shape we no longer accept: not stated
        stated = None
    if isinstance(raw, dict) and raw and isinstance(provider, str):
        from ..ingest.mappers import normalise_metadata  # not at the top: comfyvn.ingest imports the registry

        try:
            mapped = normalise_metadata(provider, raw).get("license_terms") or {}
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("asset %s: its stored %s metadata could not be read again", rec["uid"], provider)
            mapped = {}
        if mapped.get("source"):
            return meta, {key: mapped.get(key) for key in rights.TERM_KEYS}
    try:
        return meta, stated if stated is not None else check_terms(prov["license_terms"], default_source="provider")
    except (KeyError, ValueError):
        return meta, stated


def is_ours(final: Path, uid: str) -> bool:
    """Whether ``final`` is a regular file holding the bytes of asset ``uid``."""
    try:
        return final.is_file() and not final.is_symlink() and sha256_file(final)[0][:16] == uid
    except OSError:
        return False


def sweep_temp_files(folder: Path, prefix: str) -> int:
    """Delete temporary files under ``folder`` (names starting with ``prefix``) whose writer is dead."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.name.endswith(".tmp"):
            continue
        if not owner_alive(temp_owner(entry.name) or ""):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


class Recovery:
    """Recovery of one project."""

    def __init__(self, db: Database, project_id: str, root: AssetsRoot, records: Records, sidecars: Sidecars,
                 previews: Previews, removal: Removal, journal: MoveJournal) -> None:
        self.db = db
        self.project_id = project_id
        self.root = root
        self.records = records
        self.sidecars = sidecars
        self.previews = previews
        self.removal = removal
        self.journal = journal

    def recover(self, taken_over: Mapping[str, str] | None = None) -> dict[str, int]:
        """Finish or undo what a killed process left behind.

        * file operations journalled by a process that is no longer running: a registration
          that never committed is undone (its file removed or moved back, its sidecar
          removed), a committed one is kept, a removal is finished;
        * temporary files of dead writers in the incoming folder and beside journalled files;
        * sidecars whose row changed but whose file was not rewritten yet;
        * thumbnails still marked pending are made again.

        Operations of live processes (this one included) are left alone, and so are those of
        processes on other hosts (nobody here can tell whether they live), except moves of the
        staged files named in ``taken_over``: files whose ingest claim the caller took over after
        its lease ran out (see :func:`comfyvn.registry.journal.is_abandoned`); ``{file name: its
        path on this server}``, where such a file is moved back (another server may mount the
        staging folder elsewhere: the path it journalled may not exist here).
        """
        stats = {"undone": 0, "kept": 0, "finished": 0, "skipped_live": 0, "temp_files": 0, "sidecars": 0,
                 "thumbnails": 0, "rights": 0}
        taken_over = taken_over or {}
        for intent in self.journal.entries():
            if not is_abandoned(intent, taken_over):
                stats["skipped_live"] += 1
                continue
            claim = self.db.query_one("SELECT uid FROM assets WHERE project_id = ? AND path = ?",
                                      (self.project_id, intent["dest"]))
            final = self.root.abs(intent["dest"])
            if intent["op"] == "remove":
                if claim is None:
                    self.removal.finish(intent["uid"], intent["dest"], intent["src"])
                stats["finished"] += 1
            elif claim is not None and claim["uid"] == intent["uid"]:
                stats["kept"] += 1  # the registration committed; only the journal entry was left
            else:
                if intent["op"] in ("copy", "move") and claim is None and is_ours(final, intent["uid"]):
                    src = Path(intent["src"]) if intent["src"] else None
                    if src is not None and intent["op"] == "move" and src.name in taken_over:
                        src = Path(taken_over[src.name])  # where this server sees that staged file
                    try:
                        if intent["op"] == "move" and src is not None and not src.exists():
                            src.parent.mkdir(parents=True, exist_ok=True)
                            shutil.move(str(final), str(src))
                        else:
                            final.unlink(missing_ok=True)
                    except FileNotFoundError:  # its old holder, still running, took it back first
                        pass
                    sidecar = self.root.sidecar_path(intent["dest"])
                    if sidecar_uid(sidecar) == intent["uid"]:
                        sidecar.unlink(missing_ok=True)
                stats["undone"] += 1
            stats["temp_files"] += sweep_temp_files(final.parent, f".{final.name}")
            with self.db.transaction() as conn:
                self.journal.forget(conn, intent["id"])
        stats["temp_files"] += sweep_temp_files(self.root.path / INCOMING_DIR, "")
        stats["rights"] = self.rederive_rights()
        pending_rows = self.db.query("SELECT uid, path FROM assets WHERE project_id = ? AND sidecar_pending = 1",
                                     (self.project_id,))
        for row in pending_rows:  # a writer killed mid-sidecar leaves its temporary file beside it
            sidecar = self.root.sidecar_path(row["path"])
            stats["temp_files"] += sweep_temp_files(sidecar.parent, f".{sidecar.name}")
        stats["sidecars"] = self.sidecars.sync([r["uid"] for r in pending_rows])
        stuck = self.db.query("SELECT uid, path, preview FROM assets WHERE project_id = ? AND uid IN "
                              "(SELECT uid FROM thumbnails WHERE project_id = ? AND status = 'pending')",
                              (self.project_id, self.project_id))
        stats["thumbnails"] = self.previews.resume(stuck)
        if any(v for k, v in stats.items() if k not in ("skipped_live", "thumbnails")):
            log.info("recovered project %s: %s", self.project_id, stats)
        return stats

    def rederive_rights(self, batch: int = 200) -> int:
        """The one-time step of migration ``registry.004_rights``: rows registered before it
        (``rights_version`` 0) get their rights derived from their stored provider metadata
        (``provenance.provider_metadata``, read again by today's mapper), else the terms their
        metadata carries, else their licence.  The ``license_terms`` left in free-form ``meta`` move
        to ``provenance.license_terms``; the sidecar is rewritten.  No hook fires: nothing was edited."""
        done = 0
        while True:
            with self.db.transaction() as conn:
                rows = conn.execute("SELECT * FROM assets WHERE project_id = ? AND rights_version < ? LIMIT ?",
                                    (self.project_id, RIGHTS_VERSION, batch)).fetchall()
                for row in rows:
                    rec = self.records.decode(row)
                    meta, stated = stored_terms(rec)
                    prov = dict(rec["provenance"])
                    if stated is not None:
                        prov["license_terms"] = stated
                    rec.update(meta=meta, provenance=prov,
                               license_terms=rights.asset_rights(rec["license"], stated,
                                                                 base_model=meta.get("base_model")))
                    conn.execute(
                        "UPDATE assets SET meta = ?, provenance = ?, license_terms = ?, commercial_rank = ?,"
                        " credit_required = ?, derivatives_allowed = ?, license_known = ?, rights_version = ?,"
                        " search_text = ?, sidecar_pending = 1 WHERE project_id = ? AND uid = ?",
                        (json.dumps(meta, ensure_ascii=False), json.dumps(prov, ensure_ascii=False),
                         *self.records.rights_columns(rec), RIGHTS_VERSION, self.records.search_text(rec), self.project_id,
                         rec["uid"]))
            done += len(rows)
            if len(rows) < batch:
                return done

    def pending(self, taken_over: Collection[str] = ()) -> list[dict]:
        """Journalled file operations of processes that are no longer running (what recover() would fix)."""
        return self.journal.abandoned(taken_over)
