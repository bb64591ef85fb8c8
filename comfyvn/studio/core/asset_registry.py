"""The asset registry: SQLite rows, JSON sidecars, thumbnails, provenance, tags, licences and hooks.

Every change commits its row(s) and its event-log rows in one transaction, then writes the
sidecar beside the file (atomically) and runs the in-process hooks synchronously.  File
moves are journalled in ``file_intents`` first, so a process killed at any point leaves a
state that :meth:`AssetRegistry.recover` (run when a registry opens) brings back to "row +
file + sidecar" or "nothing", never half of it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ... import rights
from ...config import Workspace, get_setting, setup_logging, workspace
from ...core import modder_hooks
from ...fsutil import (
    owner_alive,
    owner_token,
    temp_owner,
)
from ...hashing import sha256_file
from ...registry import listeners
from ...registry.errors import AssetCollisionError, AssetNotFoundError, AssetRegistryError
from ...registry.journal import MoveJournal
from ...registry.listeners import Hook, Listeners
from ...registry.paths import INCOMING_DIR, SIDECAR_SUFFIX, AssetsRoot
from ...registry.placement import Placement, copy_and_hash
from ...registry.previews import Previews
from ...registry.records import (
    DERIVED_META_KEYS,
    FIELD_KEYS,
    PROJECT_RE,
    RIGHTS_BOOL_FILTERS,
    RIGHTS_VERSION,
    SORT_COLUMNS,
    TYPE_RE,
    UNSET,
    Records,
    check_project_id,
    check_terms,
    decode_cursor,
    encode_cursor,
    meta_view,
    normalise_tags,
    split_metadata,
    stated_terms,
)
from ...registry.sidecars import MAX_SIDECAR_BYTES, Sidecars, sidecar_uid
from ...registry.updates import Updates
from ...store import Database, get_database

__all__ = [  # every public name this module had before the registry was split by role
    "DERIVED_META_KEYS", "FIELD_KEYS", "INCOMING_DIR", "MAX_SIDECAR_BYTES", "PROJECT_RE", "RIGHTS_BOOL_FILTERS",
    "RIGHTS_VERSION", "SIDECAR_SUFFIX", "SORT_COLUMNS", "AssetCollisionError", "AssetNotFoundError", "AssetRegistry",
    "AssetRegistryError", "Hook", "check_project_id", "copy_and_hash", "decode_cursor", "encode_cursor", "log",
    "normalise_tags", "split_metadata",
]

log = logging.getLogger("comfyvn.studio.core.asset_registry")

_TYPE_RE = TYPE_RE


_RECOVERED: set[tuple[str, str, str]] = set()


def _stored_terms(rec: dict) -> tuple[dict, dict | None]:
    """The terms a row registered before rights were stored carries (see ``_rederive_rights``)."""
    prov = rec["provenance"]
    raw, provider = prov.get("provider_metadata"), prov.get("provider")
    meta = {k: v for k, v in rec["meta"].items() if k != "license_terms"}
    try:
        stated = stated_terms(rec["meta"], {})[1]
    except ValueError:  # terms an old version stored in a shape we no longer accept: not stated
        stated = None
    if isinstance(raw, dict) and raw and isinstance(provider, str):
        from ...ingest.mappers import normalise_metadata  # ingest imports this module

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


class AssetRegistry:
    """Registry of one project's assets inside a workspace.

    ``AssetRegistry(project_id="modding")`` uses the current workspace (``COMFYVN_HOME``);
    ``assets_root`` / ``thumbnails_root`` (alias ``thumb_root``) / ``db_path`` / ``workspace_root``
    override the defaults.  Without ``assets_root``/``thumbnails_root``, the environment
    variables ``COMFYVN_ASSETS_ROOT`` / ``COMFYVN_THUMBS_ROOT`` (the original's) replace the
    workspace's ``data/assets`` / thumbnail folder; the project's folder is created beneath.
    ``meta_root`` (a folder outside the assets root) also writes the original's legacy mirror
    sidecars ``<meta_root>/<path without suffix>.json``; ``None``/``False`` writes none.
    """

    HOOK_ASSET_REGISTERED = listeners.HOOK_ASSET_REGISTERED
    HOOK_ASSET_META_UPDATED = listeners.HOOK_ASSET_META_UPDATED
    HOOK_ASSET_REMOVED = listeners.HOOK_ASSET_REMOVED
    HOOK_SIDECAR_WRITTEN = listeners.HOOK_SIDECAR_WRITTEN
    HOOK_EVENTS = listeners.HOOK_EVENTS
    MODDER_TOPICS = listeners.MODDER_TOPICS

    def __init__(self, project_id: str | None = None, *, workspace_root: str | os.PathLike[str] | None = None,
                 assets_root: str | os.PathLike[str] | None = None,
                 thumbnails_root: str | os.PathLike[str] | None = None,
                 make_thumbnails: bool = True, ws: Workspace | None = None, recover: bool = True,
                 db_path: str | os.PathLike[str] | None = None, thumb_root: str | os.PathLike[str] | None = None,
                 meta_root: str | os.PathLike[str] | bool | None = None) -> None:
        """``recover=False`` skips the crash recovery a registry otherwise runs the first time a
        process opens a project (the enforcer's ``--dry-run`` uses it to change nothing)."""
        self.ws: Workspace = ws or workspace(workspace_root)
        self.ws.ensure()
        setup_logging(self.ws.logs_dir)
        project_id = project_id or get_setting("registry.default_project", "default", self.ws)
        self.project_id = check_project_id(project_id)
        thumbnails_root = thumbnails_root or thumb_root
        env_assets, env_thumbs = os.environ.get("COMFYVN_ASSETS_ROOT"), os.environ.get("COMFYVN_THUMBS_ROOT")
        self.assets_root = (Path(assets_root).resolve() if assets_root
                            else Path(env_assets).expanduser().resolve() / project_id if env_assets
                            else self.ws.assets_root / project_id)
        self.thumbnails_root = (Path(thumbnails_root).resolve() if thumbnails_root
                                else Path(env_thumbs).expanduser().resolve() / project_id if env_thumbs
                                else self.ws.thumbnails_dir / project_id)
        self.meta_root = self._legacy_meta_root(meta_root)
        self.assets_root.mkdir(parents=True, exist_ok=True)
        self._root = AssetsRoot(self.assets_root)
        self.make_thumbnails = make_thumbnails
        # registry.fsync (default true): an asset's bytes and its directory entry reach the disk
        # before its row commits.  Sidecars and thumbnails are derived from the row, so they are
        # only written atomically (rename), not fsynced: recover() and the enforcer rebuild them.
        self.fsync = bool(get_setting("registry.fsync", True, self.ws))
        self.db: Database = get_database(Path(db_path).resolve() if db_path else self.ws.db_path)
        self._listeners = Listeners(self.db, project_id)
        self._records = Records(self.db, project_id, self._root)
        self._sidecars = Sidecars(self.db, project_id, self._root, self._records, self._listeners, self.meta_root)
        self._updates = Updates(self.db, project_id, self._root, self._records, self._sidecars, self._listeners)
        self._previews = Previews(self.ws, self.db, project_id, self._root, self.thumbnails_root, self._records,
                                  make_thumbnails=make_thumbnails)
        self._journal = MoveJournal(self.db, project_id)
        self._placement = Placement(self.ws, self.db, project_id, self._root, self._records, self._sidecars,
                                    self._previews, self._updates, self._listeners, self._journal, fsync=self.fsync)
        modder_hooks.watch_database(self.db)  # listeners of comfyvn.core.modder_hooks see this database
        recovery_key = (str(self.db.path), project_id, str(self.assets_root))
        if recover and recovery_key not in _RECOVERED:
            _RECOVERED.add(recovery_key)
            self.recover()

    def _legacy_meta_root(self, meta_root: str | os.PathLike[str] | bool | None) -> Path | None:
        if meta_root is None or meta_root is False:
            return None
        if meta_root is True:
            raise ValueError("meta_root must be a folder, or None/False for no legacy mirror")
        path = Path(meta_root).expanduser().resolve()
        inside = path == self.assets_root or self.assets_root in path.parents
        if inside and not any(part.startswith(".") for part in path.relative_to(self.assets_root).parts):
            raise ValueError(f"meta_root {path} lies inside the assets root {self.assets_root}: the enforcer and "
                             "rebuild would register the mirror files as assets; use a folder outside it "
                             "(or a dot-folder such as assets_root/'.meta')")
        path.mkdir(parents=True, exist_ok=True)
        return path

    # the original registry's attribute names
    @property
    def ASSETS_ROOT(self) -> Path:  # noqa: N802
        return self.assets_root

    @property
    def THUMB_ROOT(self) -> Path:  # noqa: N802
        return self.thumbnails_root

    @property
    def META_ROOT(self) -> Path | None:  # noqa: N802
        return self.meta_root

    @property
    def db_path(self) -> Path:
        return self.db.path

    # ------------------------------------------------------------------ hooks
    def add_hook(self, event: str, callback: Hook) -> None:
        """Call ``callback(payload)`` synchronously after every ``event`` made in this process
        (attaching the same callback twice attaches it once)."""
        self._listeners.add(event, callback)

    def remove_hook(self, event: str, callback: Hook) -> bool:
        """Detach a callback; returns False (and raises nothing) when it was not attached."""
        return self._listeners.remove(event, callback)

    def iter_hooks(self, event: str | None = None) -> dict[str, tuple[Hook, ...]]:
        """``{event: (callback, ...)}`` attached for this project in this process: every event,
        or only ``event`` (``ValueError`` for an unknown one)."""
        return self._listeners.snapshot(event)

    def describe_hooks(self) -> dict[str, list[str]]:
        """Listener names per event, as ``GET /assets/debug/hooks`` shows them."""
        return {event: [f"{getattr(cb, '__module__', '?')}.{getattr(cb, '__qualname__', repr(cb))}" for cb in cbs]
                for event, cbs in self.iter_hooks().items()}

    def _run_hooks(self, fired: list[tuple[str, dict]]) -> None:
        self._listeners.run(fired)

    def _emit(self, conn, event: str, payload: dict, extra: dict | None = None) -> tuple[str, dict]:
        return self._listeners.emit(conn, event, payload, extra)

    def _emit_all(self, conn, calls: list[tuple[str, dict, dict | None]]) -> list[tuple[str, dict]]:
        return self._listeners.emit_all(conn, calls)

    # ------------------------------------------------------------------ paths
    def _abs(self, rel: str) -> Path:
        return self._root.abs(rel)

    def sidecar_path_for(self, rel: str) -> Path:
        """Where the sidecar of the asset at ``rel`` (relative to the assets root) lives."""
        return self._root.sidecar_path(rel)

    # ------------------------------------------------------------------ register
    def register_file(self, source_path: str | os.PathLike[str], asset_type: str, *,
                      dest_relative: str | None = None, metadata: dict | None = None, copy: bool = True,
                      provenance: dict | None = None, license_tag: str | None = None,
                      tags: Iterable[str] | str | None = None, origin: str | None = None,
                      digest: str | None = None, created_at: float | None = None) -> dict:
        """Register a file and return its asset record.

        The source obeys :mod:`comfyvn.sources`: it is opened once and checked as opened (never
        the workspace's own files, dot-names, keys or credentials; a regular file within
        ``ingest.max_source_bytes``), and read from that descriptor.  A path that came through
        ``check_source`` (a remote caller) must also lie inside ``ingest.allowed_source_roots``.

        ``copy=True`` copies the file into the assets root (hashing while copying);
        ``copy=False`` registers a file that already lies inside this project's assets root
        where it lies (never moved; a ``dest_relative`` naming another place is refused), and
        refuses anything outside it (:class:`comfyvn.sources.CopyRequiredError`: use
        ``copy=True``).  Only the workspace's own hand-off files (a staged ingest file, an
        upload's body) are moved in by rename.  The same bytes again return the existing uid, merge tags
        and metadata and copy nothing.  ``digest`` lets a caller that has just hashed the
        file (the ingest queue) skip a second read; ``created_at`` (epoch seconds) keeps the
        original registration time when a registry is rebuilt from sidecars.
        """
        [outcome] = self.register_files([{
            "source_path": source_path, "asset_type": asset_type, "dest_relative": dest_relative,
            "metadata": metadata, "copy": copy, "provenance": provenance, "license_tag": license_tag,
            "tags": tags, "origin": origin, "digest": digest, "created_at": created_at}])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def register_files(self, items: list[dict], *,
                       on_commit: Callable[[sqlite3.Connection, int, dict], None] | None = None
                       ) -> list[dict | Exception]:
        """Register many files as one group commit: one journal transaction, one fsync per
        folder, one transaction for every row, event and sidecar.

        Each item holds :meth:`register_file`'s arguments (``source_path`` and ``asset_type``
        required).  The result lists, in the items' order, the asset record or the exception of
        that item; one bad item never stops the others.  ``on_commit(conn, index, record)`` runs
        inside the commit transaction for each item whose row is inserted there, so a caller's
        own bookkeeping (the ingest queue's job status) commits atomically with the row.
        """
        return self._placement.register_files(items, on_commit=on_commit)

    # ------------------------------------------------------------------ rows
    def meta_view(self, rec: dict) -> dict:
        """An asset's ``meta`` as records, hook payloads and sidecars show it (see :func:`comfyvn.registry.records.meta_view`)."""
        return meta_view(rec)

    _search_text = staticmethod(Records.search_text)  # bench/bench_registry.py builds rows with it

    # ------------------------------------------------------------------ sidecars
    def sidecar_document(self, rec: dict) -> dict:
        """The sidecar JSON for a record (the database is the source of truth)."""
        return self._sidecars.document(rec)

    def _sync_sidecars(self, uids: Iterable[str], batch: int = 64) -> int:
        return self._sidecars.sync(uids, batch)

    def read_sidecar(self, uid: str) -> dict:
        """The parsed sidecar of an asset (raises AssetRegistryError naming the file if missing or corrupt)."""
        return self._sidecars.read(uid)

    def rewrite_sidecar(self, uid: str, *, reason: str = "rewrite") -> dict:
        """Rewrite a sidecar from the database row (the enforcer's fix).

        The sidecar's contents change, so both ``asset_meta_updated`` and
        ``asset_sidecar_written`` fire (with ``reason`` in the modder envelopes).
        """
        return self._sidecars.rewrite(uid, reason=reason)

    def ensure_sidecar(self, uid: str, *, overwrite: bool = False) -> Path:
        """The asset's sidecar path, writing it from the database when missing (or when
        ``overwrite``; that fires ``asset_meta_updated`` and ``asset_sidecar_written``)."""
        return self._sidecars.ensure(uid, overwrite=overwrite)

    def legacy_sidecar_path(self, rel: str) -> Path | None:
        """``<meta_root>/<rel without suffix>.json`` (the original's mirror), or None without meta_root."""
        return self._sidecars.legacy_path(rel)

    # ------------------------------------------------------------------ queries
    def get_asset(self, uid: str) -> dict | None:
        rec = self._records.row(uid)
        return self._records.public(rec) if rec else None

    def resolve_path(self, uid: str) -> Path | None:
        """The absolute path of an asset's file, or None for an unknown uid."""
        rec = self._records.row(uid)
        return self._abs(rec["path"]) if rec else None

    def find_by_hash(self, digest: str) -> dict | None:
        return self._records.find_by_hash(digest)

    def query_assets(self, *, asset_type: str | None = None, tags: Iterable[str] | str | None = None,
                     tags_mode: str = "all", license: str | None = None, text: str | None = None,
                     hash: str | None = None, limit: int = 50, offset: int = 0, cursor: str | None = None,
                     sort: str = "created_at", descending: bool = True, with_total: bool = False,
                     commercial_use: str | None = None, credit_required: bool | None = None,
                     derivatives: bool | None = None, license_known: bool | None = None) -> dict:
        """One page of assets: ``{"items", "next_cursor", "total"?}`` (indexed SQL, keyset cursor).

        Rights filters: ``commercial_use`` keeps assets allowing at least that level (``none <
        image < rent-civit < rent < sell``); ``credit_required``, ``derivatives`` (derivatives
        allowed) and ``license_known`` match the term exactly.  A term not stated matches no
        level and neither true nor false."""
        return self._records.query_assets(
            asset_type=asset_type, tags=tags, tags_mode=tags_mode, license=license, text=text, hash=hash,
            limit=limit, offset=offset, cursor=cursor, sort=sort, descending=descending, with_total=with_total,
            commercial_use=commercial_use, credit_required=credit_required, derivatives=derivatives,
            license_known=license_known)

    def list_assets(self, asset_type: str | None = None, *, hash_value: str | None = None,
                    tags: Iterable[str] | str | None = None, text: str | None = None, limit: int | None = None,
                    **filters: Any) -> list[dict]:
        """Assets matching the filters of :meth:`query_assets` (``hash_value`` is ``hash``).

        ``limit=None`` returns every match (read in pages of 1000), as the original did."""
        return self._records.list_assets(asset_type, hash_value=hash_value, tags=tags, text=text, limit=limit,
                                         **filters)

    def iter_assets(self, batch: int = 500) -> Iterator[dict]:
        """Every asset of the project, in path order, read in batches."""
        return self._records.iter_assets(batch)

    def count(self) -> int:
        return self._records.count()

    def facets(self) -> dict[str, list[tuple[str, int]]]:
        """Types, tags and licences with counts (for filter drop-downs)."""
        return self._records.facets()

    def to_dataframe(self, **filters: Any):
        """Matching assets as a pandas DataFrame (every asset when no filter is given)."""
        return self._records.to_dataframe(**filters)

    # ------------------------------------------------------------------ updates
    def update_asset_meta(self, uid: str, metadata: dict | None = None, *, replace: bool = False,
                          add_tags: Iterable[str] | str | None = None,
                          remove_tags: Iterable[str] | str | None = None,
                          license_tag: Any = UNSET, expected_version: int | None = None) -> dict:
        """Merge ``metadata`` into an asset (``replace=True`` swaps it); preview and thumbnails stay.

        ``tags``, ``license``, ``origin`` and ``version`` inside ``metadata`` are the asset's
        fields: ``tags`` sets the tag list (then ``add_tags``/``remove_tags`` apply), ``license``
        sets the licence (empty or null clears it; ``license_tag`` wins when both are given),
        ``origin`` sets the origin and ``version`` is the version the caller read (as
        ``expected_version``), so a record's ``meta`` can be edited and sent back as it is.

        ``expected_version`` makes the update conditional (optimistic concurrency): a row
        changed meanwhile by someone else raises instead of silently losing their edit.
        """
        return self._updates.update_meta(uid, metadata, replace=replace, add_tags=add_tags, remove_tags=remove_tags,
                                         license_tag=license_tag, expected_version=expected_version)

    def bulk_update_tags(self, uids: Iterable[str], add_tags: Iterable[str] | str | None = None,
                         remove_tags: Iterable[str] | str | None = None, license_tag: Any = UNSET) -> list[dict]:
        """Add/remove tags and override (``"cc0"``) or clear (``None``) the licence of many assets in one transaction."""
        return self._updates.bulk_update_tags(uids, add_tags, remove_tags, license_tag)

    def relocate_asset(self, uid: str, new_relative: str) -> dict:
        """Point an asset at the place its file was moved to by hand (the enforcer's fix).

        The file must already be at ``new_relative`` (inside the assets root) with the
        registered bytes; the sidecar is written there and the old one removed.
        """
        return self._updates.relocate(uid, new_relative)

    # ------------------------------------------------------------------ removal
    def remove_asset(self, uid: str, *, delete_files: bool = False) -> bool:
        """The original comfyvn's call: remove the asset as :meth:`remove_asset_record` does;
        ``True`` when it was removed, ``False`` for an unknown uid (nothing raised)."""
        try:
            self.remove_asset_record(uid, delete_files=delete_files)
        except AssetNotFoundError:
            return False
        return True

    def remove_asset_record(self, uid: str, *, delete_files: bool = False) -> dict:
        """Remove an asset's row, tags, thumbnails and provenance; its file and sidecar go to the
        workspace trash folder (``data/trash/<project>/<time>_<uid>/``), or are deleted when
        ``delete_files`` is true.  Never left in place: an unregistered file in the assets root
        is what the enforcer reports and rebuild registers again.

        Returns the removed record (with ``trashed_to``, ``trashed`` and ``removed``); an unknown
        uid raises :class:`AssetNotFoundError` (a ``KeyError``)."""
        fired: list[tuple[str, dict]] = []
        now = time.time()
        with self.db.transaction() as conn:
            rec = self._records.require(uid, conn)
            trash = None if delete_files else str(self._trash_dir(uid, now))
            intent = self._journal.record(conn, uid, "remove", trash, rec["path"], now, owner_token())
            conn.execute("DELETE FROM assets WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM asset_tags WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM thumbnails WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            payload = {"uid": uid, "type": rec["type"], "path": str(self._abs(rec["path"])),
                       "sidecar": str(self.sidecar_path_for(rec["path"]))}
            fired.append(self._emit(conn, self.HOOK_ASSET_REMOVED, payload,
                                    {"trashed_to": trash, "deleted_files": delete_files, "bytes": rec["bytes"],
                                     "meta": meta_view(rec)}))
        self._finish_remove(rec["uid"], rec["path"], trash)
        self._journal.drop([intent])
        mirror = self.legacy_sidecar_path(rec["path"])
        if mirror is not None:
            mirror.unlink(missing_ok=True)
        self._run_hooks(fired)
        out = self._records.public(rec)
        out.update(trashed_to=trash, trashed=trash is not None, removed=True)
        return out

    def _trash_dir(self, uid: str, now: float) -> Path:
        return self.ws.trash_dir / self.project_id / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}_{uid}"

    def _finish_remove(self, uid: str, rel: str, trash: str | None) -> None:
        file_path, sidecar = self._abs(rel), self.sidecar_path_for(rel)
        for path in (file_path, sidecar):
            if not path.exists():
                continue
            if trash:
                Path(trash).mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(Path(trash) / path.name))
            else:
                path.unlink(missing_ok=True)
        self._previews.delete_files(uid)

    # ------------------------------------------------------------------ thumbnails
    def regenerate_thumbnails(self, uid: str) -> None:
        """Make an asset's thumbnails (or waveform) again, off the caller's thread."""
        self._previews.regenerate(uid)

    def thumbnail_status(self, uid: str) -> dict[str, dict]:
        """``{size: {"path", "status": pending|ready|failed, "error"}}`` for an asset."""
        return self._previews.status(uid)

    def resolve_thumbnail_path(self, uid: str, size: int | str = 256) -> Path | None:
        """The cached thumbnail (or ``"waveform"`` JSON) of an asset, or None if not (yet) made."""
        return self._previews.resolve(uid, size)

    @staticmethod
    def wait_for_thumbnails(timeout: float | None = 30.0) -> bool:
        """Block until this process has no thumbnail pending (True) or ``timeout`` passed (False)."""
        return Previews.wait(timeout)

    # ------------------------------------------------------------------ recovery
    def recover(self) -> dict[str, int]:
        """Finish or undo what a killed process left behind.

        * file operations journalled by a process that is no longer running: a registration
          that never committed is undone (its file removed or moved back, its sidecar
          removed), a committed one is kept, a removal is finished;
        * temporary files of dead writers in the incoming folder and beside journalled files;
        * sidecars whose row changed but whose file was not rewritten yet;
        * thumbnails still marked pending are made again.

        Operations of live processes (this one included) are left alone.
        """
        stats = {"undone": 0, "kept": 0, "finished": 0, "skipped_live": 0, "temp_files": 0, "sidecars": 0,
                 "thumbnails": 0, "rights": 0}
        intents = self.db.query("SELECT * FROM file_intents WHERE project_id = ? ORDER BY id", (self.project_id,))
        for intent in intents:
            if owner_alive(intent["owner"]):
                stats["skipped_live"] += 1
                continue
            claim = self.db.query_one("SELECT uid FROM assets WHERE project_id = ? AND path = ?",
                                      (self.project_id, intent["dest"]))
            final = self._abs(intent["dest"])
            if intent["op"] == "remove":
                if claim is None:
                    self._finish_remove(intent["uid"], intent["dest"], intent["src"])
                stats["finished"] += 1
            elif claim is not None and claim["uid"] == intent["uid"]:
                stats["kept"] += 1  # the registration committed; only the journal entry was left
            else:
                if intent["op"] in ("copy", "move") and claim is None and self._is_ours(final, intent["uid"]):
                    src = Path(intent["src"]) if intent["src"] else None
                    if intent["op"] == "move" and src is not None and not src.exists():
                        src.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(str(final), str(src))
                    else:
                        final.unlink(missing_ok=True)
                    sidecar = self.sidecar_path_for(intent["dest"])
                    if sidecar_uid(sidecar) == intent["uid"]:
                        sidecar.unlink(missing_ok=True)
                stats["undone"] += 1
            stats["temp_files"] += _sweep_temp_files(final.parent, f".{final.name}")
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM file_intents WHERE id = ?", (intent["id"],))
        stats["temp_files"] += _sweep_temp_files(self.assets_root / INCOMING_DIR, "")
        stats["rights"] = self._rederive_rights()
        pending_rows = self.db.query("SELECT uid, path FROM assets WHERE project_id = ? AND sidecar_pending = 1",
                                     (self.project_id,))
        for row in pending_rows:  # a writer killed mid-sidecar leaves its temporary file beside it
            sidecar = self.sidecar_path_for(row["path"])
            stats["temp_files"] += _sweep_temp_files(sidecar.parent, f".{sidecar.name}")
        stats["sidecars"] = self._sync_sidecars([r["uid"] for r in pending_rows])
        stuck = self.db.query("SELECT uid, path, preview FROM assets WHERE project_id = ? AND uid IN "
                              "(SELECT uid FROM thumbnails WHERE project_id = ? AND status = 'pending')",
                              (self.project_id, self.project_id))
        stats["thumbnails"] = self._previews.resume(stuck)
        if any(v for k, v in stats.items() if k not in ("skipped_live", "thumbnails")):
            log.info("recovered project %s: %s", self.project_id, stats)
        return stats

    def _rederive_rights(self, batch: int = 200) -> int:
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
                    rec = self._records.decode(row)
                    meta, stated = _stored_terms(rec)
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
                         *self._records.rights_columns(rec), RIGHTS_VERSION, self._records.search_text(rec), self.project_id,
                         rec["uid"]))
            done += len(rows)
            if len(rows) < batch:
                return done

    def pending_recovery(self) -> list[dict]:
        """Journalled file operations of processes that are no longer running (what recover() would fix)."""
        rows = self.db.query("SELECT * FROM file_intents WHERE project_id = ? ORDER BY id", (self.project_id,))
        return [dict(r) for r in rows if not owner_alive(r["owner"])]

    @staticmethod
    def _is_ours(final: Path, uid: str) -> bool:
        try:
            return final.is_file() and not final.is_symlink() and sha256_file(final)[0][:16] == uid
        except OSError:
            return False


def _sweep_temp_files(folder: Path, prefix: str) -> int:
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
