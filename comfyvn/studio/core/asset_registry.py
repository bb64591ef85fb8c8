"""The asset registry: SQLite rows, JSON sidecars, thumbnails, provenance, tags, licences and hooks.

Every change commits its row(s) and its event-log rows in one transaction, then writes the
sidecar beside the file (atomically) and runs the in-process hooks synchronously.  File
moves are journalled in ``file_intents`` first, so a process killed at any point leaves a
state that :meth:`AssetRegistry.recover` (run when a registry opens) brings back to "row +
file + sidecar" or "nothing", never half of it.

This module is the facade at the path the seeds name: :class:`AssetRegistry` opens a project
and delegates each call to one part under :mod:`comfyvn.registry` (``records``, ``placement``,
``journal``, ``sidecars``, ``previews``, ``listeners``, ``updates``, ``removal``,
``recovery``), and every name this module always offered is still importable from it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ...config import Workspace, default_project, get_setting, setup_logging, workspace
from ...core import modder_hooks
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
    UNSET,
    Records,
    check_project_id,
    decode_cursor,
    encode_cursor,
    meta_view,
    normalise_tags,
    split_metadata,
)
from ...registry.recovery import Recovery
from ...registry.removal import Removal
from ...registry.sidecars import MAX_SIDECAR_BYTES, Sidecars
from ...registry.updates import Updates
from ...store import Connection, Database, SqliteDatabase, get_database, open_store

__all__ = [  # every public name this module had before the registry was split by role
    "DERIVED_META_KEYS", "FIELD_KEYS", "INCOMING_DIR", "MAX_SIDECAR_BYTES", "PROJECT_RE", "RIGHTS_BOOL_FILTERS",
    "RIGHTS_VERSION", "SIDECAR_SUFFIX", "SORT_COLUMNS", "AssetCollisionError", "AssetNotFoundError", "AssetRegistry",
    "AssetRegistryError", "Hook", "check_project_id", "copy_and_hash", "decode_cursor", "encode_cursor", "log",
    "normalise_tags", "split_metadata",
]

log = logging.getLogger("comfyvn.studio.core.asset_registry")

# (database, project, assets root) recovered in this process: recover() runs once per process and project
_RECOVERED: set[tuple[str, str, str]] = set()


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
        project_id = project_id or default_project(self.ws)
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
        self._root = AssetsRoot(self.assets_root, self.ws, project_id)
        # registry.fsync (default true): an asset's bytes and its directory entry reach the disk
        # before its row commits.  Sidecars and thumbnails are derived from the row, so they are
        # only written atomically (rename), not fsynced: recover() and the enforcer rebuild them.
        fsync = bool(get_setting("registry.fsync", True, self.ws))
        self.db: Database = get_database(Path(db_path).resolve()) if db_path else open_store(self.ws)
        self._listeners = Listeners(self.db, project_id)
        self._records = Records(self.db, project_id, self._root)
        self._sidecars = Sidecars(self.db, project_id, self._root, self._records, self._listeners, self.meta_root)
        self._updates = Updates(self.db, project_id, self._root, self._records, self._sidecars, self._listeners)
        self._previews = Previews(self.ws, self.db, project_id, self._root, self.thumbnails_root, self._records,
                                  make_thumbnails=make_thumbnails)
        self._journal = MoveJournal(self.db, project_id)
        self._removal = Removal(self.ws, self.db, project_id, self._root, self._records, self._sidecars,
                                self._previews, self._listeners, self._journal)
        self._recovery = Recovery(self.db, project_id, self._root, self._records, self._sidecars, self._previews,
                                  self._removal, self._journal)
        self._placement = Placement(self.ws, self.db, project_id, self._root, self._records, self._sidecars,
                                    self._previews, self._updates, self._listeners, self._journal, fsync=fsync)
        modder_hooks.watch_database(self.db)  # listeners of comfyvn.core.modder_hooks see this database
        recovery_key = (self.db.url, project_id, str(self.assets_root))
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
    def db_path(self) -> Path | None:
        """The SQLite file of the registry (None when the store is PostgreSQL)."""
        return self.db.path if isinstance(self.db, SqliteDatabase) else None

    @property
    def make_thumbnails(self) -> bool:
        """Whether this registry makes thumbnails and waveforms (on its worker thread)."""
        return self._previews.make_thumbnails

    @make_thumbnails.setter
    def make_thumbnails(self, value: bool) -> None:
        self._previews.make_thumbnails = value

    @property
    def fsync(self) -> bool:
        """``registry.fsync``: fsync an asset's bytes and folder before its row commits."""
        return self._placement.fsync

    @fsync.setter
    def fsync(self, value: bool) -> None:
        self._placement.fsync = value

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

    # ------------------------------------------------------------------ paths
    def file_location(self, rel: str) -> tuple[Path, str]:
        """``(base folder, name inside it)`` of the asset file at ``rel``: the assets root, or the
        library root of a file registered in place (for a confined open)."""
        return self._root.file_location(rel)

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
                       on_commit: Callable[[Connection, int, dict], None] | None = None,
                       on_commit_many: Callable[[Connection, list[tuple[int, dict]]], None] | None = None
                       ) -> list[dict | Exception]:
        """Register many files as one group commit: one journal transaction, one fsync per
        folder, one transaction for every row, event and sidecar.

        Each item holds :meth:`register_file`'s arguments (``source_path`` and ``asset_type``
        required).  The result lists, in the items' order, the asset record or the exception of
        that item; one bad item never stops the others.  ``on_commit(conn, index, record)`` runs
        inside the commit transaction for each item whose row is inserted there, so a caller's
        own bookkeeping (the ingest queue's job status) commits atomically with the row.
        ``on_commit_many(conn, [(index, record), ...])`` instead: the same, once for every row
        of the group commit (once per item when it falls back to committing item by item).
        """
        return self._placement.register_files(items, on_commit=on_commit, on_commit_many=on_commit_many)

    def register_in_place(self, items: list[dict], *, origin: str = "library") -> list[dict]:
        """Register files of library roots where they lie (one transaction): each item has
        ``rel`` (``@library/<root>/<path>``), ``asset_type``, ``sha256``, ``size`` and optionally
        ``source``, ``tags``, ``metadata``.  The files are never moved, copied or deleted; a
        content already registered returns the existing record."""
        return self._placement.register_in_place(items, origin=origin)

    # ------------------------------------------------------------------ rows
    def meta_view(self, rec: dict) -> dict:
        """An asset's ``meta`` as records, hook payloads and sidecars show it
        (:func:`comfyvn.registry.records.meta_view`)."""
        return meta_view(rec)

    def _row(self, uid: str, conn=None) -> dict | None:
        """The decoded row (tests/reliability/test_fuzz_sidecars.py reads it)."""
        return self._records.row(uid, conn)

    _search_text = staticmethod(Records.search_text)  # bench/bench_registry.py builds rows with it

    # ------------------------------------------------------------------ sidecars
    def sidecar_document(self, rec: dict) -> dict:
        """The sidecar JSON for a record (the database is the source of truth)."""
        return self._sidecars.document(rec)

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
        return self._root.abs(rec["path"]) if rec else None

    def find_by_hash(self, digest: str) -> dict | None:
        return self._records.find_by_hash(digest)

    def find_by_any_hash(self, value: str, *, strict: bool = False) -> dict | None:
        """The asset whose file shows ``value`` in any hash form (SHA-256, BLAKE3, CRC32, AutoV1/2/3,
        as tools display them); None when none does, or for text that is no hash (``ValueError``
        with the reason when ``strict``)."""
        return self._records.find_by_any_hash(value, strict=strict)

    def query_assets(self, *, asset_type: str | None = None, tags: Iterable[str] | str | None = None,
                     tags_mode: str = "all", license: str | None = None, text: str | None = None,
                     hash: str | None = None, limit: int = 50, offset: int = 0, cursor: str | None = None,
                     sort: str = "created_at", descending: bool = True, with_total: bool = False,
                     commercial_use: str | None = None, credit_required: bool | None = None,
                     derivatives: bool | None = None, license_known: bool | None = None,
                     total_cap: int | None = None) -> dict:
        """One page of assets: ``{"items", "next_cursor", "total"?}`` (indexed SQL, keyset cursor).
        ``total_cap`` counts at most that many matches (``total_capped`` says there were more).

        Rights filters: ``commercial_use`` keeps assets allowing at least that level (``none <
        image < rent-civit < rent < sell``); ``credit_required``, ``derivatives`` (derivatives
        allowed) and ``license_known`` match the term exactly.  A term not stated matches no
        level and neither true nor false."""
        return self._records.query_assets(
            asset_type=asset_type, tags=tags, tags_mode=tags_mode, license=license, text=text, hash=hash,
            limit=limit, offset=offset, cursor=cursor, sort=sort, descending=descending, with_total=with_total,
            commercial_use=commercial_use, credit_required=credit_required, derivatives=derivatives,
            license_known=license_known, total_cap=total_cap)

    def matching_uids(self, *, sort: str = "created_at", descending: bool = True, limit: int | None = None,
                      **filters: Any) -> list[str]:
        """The uids of every asset matching the filters of :meth:`query_assets`, in its order, read
        in one ids-only query ("select all matching")."""
        return self._records.matching_uids(sort=sort, descending=descending, limit=limit, **filters)

    def count_assets(self, cap: int | None = None, **filters: Any) -> tuple[int, bool]:
        """``(matches, capped)`` of the filters of :meth:`query_assets`; with ``cap``, at most
        ``cap`` are counted (an exact count of a million rows takes tenths of a second)."""
        return self._records.filter_sql(**filters).count(cap)

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

    def relink_in_place(self, uid: str, new_rel: str) -> dict:
        """Point an asset at the library file its bytes now lie in (a file moved outside the
        workbench); fires ``asset_meta_updated`` with ``moved_from``.  Nothing is moved."""
        return self._updates.relink_in_place(uid, new_rel)

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
        return self._removal.remove(uid, delete_files=delete_files)

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

    def set_preview_image(self, uid: str, image: Path) -> dict[str, dict]:
        """Make an asset's thumbnails from another image (a model's preview from its provider);
        returns :meth:`thumbnail_status`."""
        status = self._previews.set_image(uid, image)
        self._sidecars.sync([uid])
        return status

    @staticmethod
    def wait_for_thumbnails(timeout: float | None = 30.0) -> bool:
        """Block until this process has no thumbnail pending (True) or ``timeout`` passed (False)."""
        return Previews.wait(timeout)

    # ------------------------------------------------------------------ recovery
    def recover(self, taken_over: Mapping[str, str] | None = None) -> dict[str, int]:
        """Finish or undo what a killed process left behind.

        * file operations journalled by a process that is no longer running: a registration
          that never committed is undone (its file removed or moved back, its sidecar
          removed), a committed one is kept, a removal is finished;
        * temporary files of dead writers in the incoming folder and beside journalled files;
        * sidecars whose row changed but whose file was not rewritten yet;
        * thumbnails still marked pending are made again.

        Operations of live processes (this one included) are left alone, and so are those of
        other hosts, except the moves of the staged files named in ``taken_over`` (``{staged
        file name: this server's path}``: files whose ingest claim the caller took over).
        """
        return self._recovery.recover(taken_over)

    def pending_recovery(self) -> list[dict]:
        """Journalled file operations of processes that are no longer running (what recover() would fix)."""
        return self._recovery.pending()
