"""The asset registry: SQLite rows, JSON sidecars, thumbnails, provenance, tags, licences and hooks.

Every change commits its row(s) and its event-log rows in one transaction, then writes the
sidecar beside the file (atomically) and runs the in-process hooks synchronously.  File
moves are journalled in ``file_intents`` first, so a process killed at any point leaves a
state that :meth:`AssetRegistry.recover` (run when a registry opens) brings back to "row +
file + sidecar" or "nothing", never half of it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ... import rights
from ...config import Workspace, get_setting, setup_logging, workspace
from ...core import modder_hooks
from ...fsutil import (
    UnsafePathError,
    fsync_dir,
    open_temp,
    owner_alive,
    owner_token,
    refuse_hidden,
    safe_relative,
    temp_owner,
)
from ...hashing import copy_and_hash as _copy_path_and_hash
from ...hashing import sha256_file
from ...registry import listeners
from ...registry.errors import AssetCollisionError, AssetNotFoundError, AssetRegistryError
from ...registry.listeners import Hook, Listeners
from ...registry.paths import INCOMING_DIR, SIDECAR_SUFFIX, AssetsRoot
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
    deep_merge,
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

_DIGEST_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_TYPE_RE = TYPE_RE
_UNSET = UNSET


def copy_and_hash(source: Any, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """Copy and hash ``source`` into ``dest_fh``: an opened, checked source (read from its
    descriptor, never past its size limit) or a path of the registry's own hand-off files."""
    if isinstance(source, str | os.PathLike):
        return _copy_path_and_hash(source, dest_fh, fsync=fsync)
    return source.copy_into(dest_fh, fsync=fsync)


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

    def _dest_relative(self, source: Path, source_real: Path, asset_type: str,
                       dest_relative: str | None) -> tuple[str, Path]:
        """``(rel, resolved destination)`` for a registration, validated against the assets root."""
        if dest_relative is None:
            rel = str(safe_relative(f"{asset_type}/{source.name}", what="dest_relative"))
        else:
            text = os.fspath(dest_relative).replace("\\", "/")
            pure = safe_relative(text, what="dest_relative")
            # a folder ("characters/" or no suffix) keeps the original file name, unless it names
            # the very file being registered in place
            as_folder = text.endswith("/") or (not pure.suffix and self._root.confine(str(pure), "dest_relative")
                                               != source_real)
            rel = str(pure / source.name) if as_folder else str(pure)
        if rel.endswith(SIDECAR_SUFFIX):
            raise UnsafePathError(f"dest_relative {rel!r} may not end with {SIDECAR_SUFFIX}")
        refuse_hidden(rel)
        return rel, self._root.confine(rel, "dest_relative")

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
        results: list[dict | Exception | None] = [None] * len(items)
        plans: list[dict] = []
        try:
            for index, item in enumerate(items):
                try:
                    plan = self._plan_registration(**item)
                except Exception as exc:
                    results[index] = exc
                    continue
                if "result" in plan:
                    results[index] = plan["result"]
                else:
                    plans.append({**plan, "index": index})
            if plans:
                self._commit_registrations(plans, results, on_commit)
        finally:
            for plan in plans:
                if plan.get("tmp") is not None:
                    plan["tmp"].unlink(missing_ok=True)
        return results  # type: ignore[return-value]

    def _plan_registration(self, source_path: str | os.PathLike[str], asset_type: str, *,
                           dest_relative: str | None = None, metadata: dict | None = None, copy: bool = True,
                           provenance: dict | None = None, license_tag: str | None = None,
                           tags: Iterable[str] | str | None = None, origin: str | None = None,
                           digest: str | None = None, created_at: float | None = None) -> dict:
        """Check one registration and read its bytes: ``{"result": record}`` when nothing is
        to be placed (a duplicate), else the plan :meth:`_commit_registrations` carries out.

        The source obeys :mod:`comfyvn.sources` (opened once, checked as opened, read from that
        descriptor).  ``copy=False`` registers a file of this project's assets root where it
        lies; the only files it moves are the workspace's own hand-offs (a staged ingest file,
        an upload's body), never a file a caller named elsewhere.
        """
        from ... import sources  # not at the top: comfyvn.ingest (which sources imports) imports this module

        if not isinstance(asset_type, str) or not TYPE_RE.match(asset_type):
            raise ValueError(f"asset_type {asset_type!r} must be 1-64 lower-case letters, digits, '.', '_' or '-'")
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object (dict)")
        if provenance is not None and not isinstance(provenance, dict):
            raise ValueError("provenance must be a JSON object (dict)")
        if license_tag is not None and not isinstance(license_tag, str):
            raise ValueError("license_tag must be a string or None")
        if digest is not None and not _DIGEST_RE.match(str(digest)):
            raise ValueError(f"digest {digest!r} must be 64 hexadecimal digits (SHA-256)")
        meta, fields = split_metadata(metadata)  # tags/license/origin inside metadata are the fields
        tag_list = normalise_tags([*normalise_tags(tags), *fields.get("tags", [])])
        if license_tag is None and "license" in fields:
            license_tag = fields["license"]  # "" clears the licence of a duplicate; a new asset gets none
        origin = origin or fields.get("origin")
        merge = {"meta": meta, "tags": tag_list, "license_tag": license_tag}
        confined = isinstance(source_path, sources.SourcePath)  # named by a remote caller (check_source)
        args = {"asset_type": asset_type, "dest_relative": dest_relative, "merge": merge, "provenance": provenance,
                "origin": origin, "created_at": created_at}
        if not copy and not confined and (handoff := self._handoff_source(source_path)) is not None:
            return self._plan_bytes(Path(os.fspath(source_path)), handoff, None, op="move", digest=digest, **args)
        limit = sources.source_limit(self.ws, self.assets_root if copy else None)
        with sources.open_source(source_path, self.ws, confined=confined, assets_root=self.assets_root,
                                 limit=limit) as opened:
            return self._plan_bytes(Path(os.fspath(source_path)), opened.path, opened, op="copy" if copy else "adopt",
                                    digest=digest, **args)

    def _handoff_source(self, source_path: str | os.PathLike[str]) -> Path | None:
        """The resolved path of a hand-off file (see :func:`comfyvn.sources.is_handoff_file`), else None."""
        from ... import sources

        raw = Path(os.fspath(source_path))
        try:
            mode = os.lstat(raw).st_mode
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(mode):  # a symlink is never a hand-off
            return None
        real = Path(os.path.realpath(raw))
        return real if sources.is_handoff_file(real, self.ws) else None

    def _in_place_relative(self, source: Path, source_real: Path, asset_type: str,
                           dest_relative: str | None) -> tuple[str, Path]:
        """``(rel, path)`` of a ``copy=False`` registration: the file's own place in the assets root."""
        from ... import sources

        real = str(source_real)
        if not real.startswith(self._root.real + os.sep):
            raise sources.CopyRequiredError(
                f"copy=false registers a file where it lies, so it must already be inside this project's assets "
                f"root ({self._root.real}); {source} is not. Use copy=true to copy it in (the original is left alone)")
        rel = real[len(self._root.real) + 1:].replace(os.sep, "/")
        if rel.endswith(SIDECAR_SUFFIX):
            raise UnsafePathError(f"{rel!r} is a sidecar, not an asset")
        if dest_relative is not None and self._dest_relative(source, source_real, asset_type,
                                                             dest_relative)[1] != source_real:
            raise sources.CopyRequiredError(
                f"copy=false registers {rel!r} where it lies (it is never moved), but dest_relative "
                f"{dest_relative!r} names another place: omit dest_relative, or use copy=true to copy it there")
        return rel, source_real

    def _plan_bytes(self, source: Path, source_real: Path, opened: Any, *, op: str, asset_type: str,
                    dest_relative: str | None, merge: dict, digest: str | None, provenance: dict | None,
                    origin: str | None, created_at: float | None) -> dict:
        """Read (copy or hash) the bytes of a checked source and plan its placement.

        ``op``: ``copy`` (from ``opened``), ``adopt`` (``copy=False``: in place, hashed from
        ``opened``) or ``move`` (a hand-off file, by path)."""
        meta, tag_list, license_tag = merge["meta"], merge["tags"], merge["license_tag"]
        if op == "adopt":
            rel, final_real = self._in_place_relative(source, source_real, asset_type, dest_relative)
        else:
            rel, final_real = self._dest_relative(source, source_real, asset_type, dest_relative)
        final = self._abs(rel)
        in_place = source_real == final_real
        if in_place:
            op = "adopt"
        if digest is not None:  # a known digest finds a duplicate before any byte is read or copied
            known = self._records.row(digest.lower()[:16])
            if known is not None and known["hash"] == digest.lower():
                return {"result": self._duplicate(known, known["hash"], meta, tag_list, license_tag)}
        tmp: Path | None = None
        keep_tmp = False
        try:
            if op == "copy":
                tmp, digest, size = self._copy_in(opened)
            elif digest is None:
                digest, size = opened.sha256() if opened is not None else sha256_file(source_real)
            else:
                size = opened.size if opened is not None else source_real.stat().st_size
            digest = digest.lower()
            uid = digest[:16]
            self._check_not_another_asset(source_real, digest)
            existing = self._records.row(uid)
            if existing is not None:
                return {"result": self._duplicate(existing, digest, meta, tag_list, license_tag)}
            if op != "adopt" and os.path.lexists(final):
                if final.is_file() and not final.is_symlink() and sha256_file(final)[0] == digest:
                    op = "adopt"  # the identical file is already there: register it where it lies
                else:
                    raise AssetCollisionError(
                        f"a different file already exists at {rel!r}; choose another dest_relative")
            keep_tmp = True  # the plan owns it now
        finally:
            if tmp is not None and not keep_tmp:
                tmp.unlink(missing_ok=True)
        now = time.time()
        prov = dict(provenance or {})
        prov.setdefault("source", str(source_real))
        prov.setdefault("provider", origin or "local")
        prov.setdefault("digest", digest)
        prov.setdefault("terms_acknowledged", False)
        prov.setdefault("provider_metadata", {})
        meta, stated = stated_terms(meta, prov)
        if stated is not None:
            prov["license_terms"] = stated  # what the source said: a cleared licence falls back to it
        record = {
            "uid": uid, "type": asset_type, "path": rel, "hash": digest, "bytes": size, "tags": tag_list,
            "license": license_tag or None, "origin": origin or prov.get("provider") or "local", "version": 1,
            "created_at": float(created_at) if created_at is not None else now, "updated_at": now,
            "meta": meta, "preview": self._previews.preview_for(uid, rel), "provenance": prov,
            "license_terms": rights.asset_rights(license_tag or None, stated, base_model=meta.get("base_model")),
        }
        record["license_known"] = rights.licence_known(record["license"], record["license_terms"])
        return {"record": record, "op": op, "source": source_real, "final": final, "tmp": tmp, "merge": merge,
                "placed": False}

    def _check_not_another_asset(self, source_real: Path, digest: str) -> None:
        """Refuse a source that is the registered file of another asset whose bytes it no longer holds."""
        real = str(source_real)
        if not real.startswith(self._root.real + os.sep):
            return
        rel = real[len(self._root.real) + 1:].replace(os.sep, "/")
        row = self.db.query_one("SELECT uid, hash FROM assets WHERE project_id = ? AND path = ?", (self.project_id, rel))
        if row is not None and row["hash"] != digest:
            from ... import sources

            raise sources.SourceRefusedError(
                f"{rel!r} is the registered file of asset {row['uid']} but no longer holds its bytes; run the "
                "enforcer (comfyvn-enforcer) to inspect it instead of registering it again")

    def _commit_registrations(self, plans: list[dict], results: list, on_commit) -> None:
        """1) journal every file operation, 2) put the files in place and fsync their folders
        once, 3) commit rows + events + sidecars (+ ``on_commit``) in one transaction.  A
        process killed anywhere leaves journal entries :meth:`recover` finishes or undoes."""
        now, owner = time.time(), owner_token()
        with self.db.transaction() as conn:
            for plan in plans:
                rec, op = plan["record"], plan["op"]
                plan["intent"] = conn.execute(
                    "INSERT INTO file_intents(project_id, uid, op, src, dest, created_at, owner) VALUES (?,?,?,?,?,?,?)",
                    (self.project_id, rec["uid"], op, str(plan["source"]) if op == "move" else None, rec["path"],
                     now, owner)).lastrowid
        folders: set[str] = set()
        undo: list[dict] = []  # plans whose placement is to be taken back (and journal entry dropped)
        live: list[dict] = []
        try:
            for plan in plans:
                if plan["op"] == "adopt":
                    live.append(plan)
                    continue
                src = plan["tmp"] if plan["tmp"] is not None else plan["source"]
                try:
                    plan["placed"] = self._place(src, plan["final"], plan["record"]["hash"],
                                                 from_source=plan["tmp"] is None, folders=folders)
                except Exception as exc:
                    results[plan["index"]] = exc
                    undo.append(plan)
                    continue
                if plan["placed"]:
                    plan["tmp"] = None  # moved into place
                else:
                    plan["op"] = "adopt"  # an identical file raced in at the destination
                live.append(plan)
            if self.fsync:
                for folder in folders:
                    fsync_dir(Path(folder))
            fired: list[tuple[str, dict]] = []
            committed: list[dict] = []
            with self.db.transaction() as conn:
                for plan in live:
                    outcome = self._commit_one(conn, plan, on_commit)
                    if isinstance(outcome, list):
                        fired.extend(outcome)
                        committed.append(plan)
                    else:
                        undo.append(plan)
                        if isinstance(outcome, BaseException):
                            results[plan["index"]] = outcome
        except BaseException as exc:  # the commit itself failed: nothing of this batch is registered
            for plan in live:
                if plan not in undo:
                    undo.append(plan)
                    results[plan["index"]] = exc if isinstance(exc, Exception) else None
                if plan.get("sidecar_written"):  # written for a row that never committed
                    self.sidecar_path_for(plan["record"]["path"]).unlink(missing_ok=True)
            self._undo_all(undo)
            raise
        self._undo_all(undo)
        for plan in undo:
            if results[plan["index"]] is None:  # another process registered the same bytes a moment ago
                clash = plan["clash"]
                merge = plan["merge"]
                try:
                    results[plan["index"]] = self._duplicate(clash, plan["record"]["hash"], merge["meta"],
                                                             merge["tags"], merge["license_tag"])
                except Exception as exc:
                    results[plan["index"]] = exc
        self._run_hooks(fired)
        for plan in committed:
            log.debug("registered %s as %s (%s, %d bytes)", plan["record"]["path"], plan["record"]["uid"],
                      plan["op"], plan["record"]["bytes"])
            self._previews.schedule(plan["record"])
            results[plan["index"]] = self._records.public(plan["record"])

    def _commit_one(self, conn, plan: dict, on_commit) -> list[tuple[str, dict]] | BaseException | None:
        """Insert one planned row inside the group transaction (under a savepoint, so a clash
        or a failed sidecar undoes only this item).  Returns the hook calls to run, or the
        item's exception, or None when another process holds the same bytes (``plan["clash"]``)."""
        rec = plan["record"]
        conn.execute("SAVEPOINT register_one")
        try:
            try:
                self._records.insert(conn, rec)
            except sqlite3.IntegrityError:  # the uid or the path is taken (by another process)
                plan["clash"] = self._records.row(rec["uid"], conn)
                if plan["clash"] is not None:
                    conn.execute("ROLLBACK TO register_one")
                    conn.execute("RELEASE register_one")
                    return None
                self._records.check_path_free(conn, rec["path"])
                raise
            conn.execute("DELETE FROM file_intents WHERE id = ?", (plan["intent"],))
            fired = self._emit_all(conn, [
                (self.HOOK_ASSET_REGISTERED, self._records.payload(rec, include_meta=True),
                 {"bytes": rec["bytes"], "license_terms": dict(rec["license_terms"])}),
                (self.HOOK_SIDECAR_WRITTEN, self._records.sidecar_payload(rec), None)])
            if rec["preview"].get("kind"):
                self._previews.mark(conn, rec, "pending")
            if on_commit is not None:
                on_commit(conn, plan["index"], self._records.public(rec))
            # written under the write lock: no other writer can slip an older sidecar in after
            self._sidecars.write(rec)
            plan["sidecar_written"] = True
        except Exception as exc:
            conn.execute("ROLLBACK TO register_one")
            conn.execute("RELEASE register_one")
            return exc
        conn.execute("RELEASE register_one")
        return fired

    def _undo_all(self, plans: list[dict]) -> None:
        """Take back the placements of items that did not commit and drop their journal entries."""
        for plan in plans:
            self._undo_place(plan["op"] if plan["placed"] else "adopt", plan["source"], plan["final"])
        self._drop_intents([p["intent"] for p in plans])

    def _drop_intents(self, intents: list[int]) -> None:
        if not intents:
            return
        try:
            with self.db.transaction() as conn:
                conn.executemany("DELETE FROM file_intents WHERE id = ?", [(i,) for i in intents])
        except Exception:
            log.exception("could not clear file intents %s; recover() will retry", intents)

    def _copy_in(self, source: Any) -> tuple[Path, str, int]:
        """Copy ``source`` (a path, or an opened :class:`comfyvn.sources.OpenedSource`) into the
        registry's incoming folder, hashing it in the same pass."""
        incoming = self._root.text + os.sep + INCOMING_DIR
        try:
            fd, name = open_temp(incoming, "copy")
        except FileNotFoundError:
            os.makedirs(incoming, exist_ok=True)
            fd, name = open_temp(incoming, "copy")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                digest, size = copy_and_hash(source, fh, fsync=self.fsync)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest, size

    def _place(self, src: Path, final: Path, digest: str, *, from_source: bool, folders: set[str]) -> bool:
        """Move ``src`` to ``final`` without ever overwriting anything there.

        Returns False (and leaves ``src`` alone) when an identical file already sits at
        ``final``; raises :class:`AssetCollisionError` when a different one does.  The folder
        to fsync (once per group commit) is added to ``folders``.
        """
        try:
            try:
                os.link(src, final)
            except FileNotFoundError:
                if not src.exists():
                    raise
                final.parent.mkdir(parents=True, exist_ok=True)  # first file in a new folder
                os.link(src, final)
        except FileExistsError:
            if final.is_file() and sha256_file(final)[0] == digest:
                return False
            raise AssetCollisionError(f"a different file appeared at {final} while registering; "
                                      "nothing was overwritten") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise
            if exc.errno == errno.EXDEV and from_source:  # moving across file systems: copy in first
                tmp, copied, _ = self._copy_in(src)
                try:
                    if copied != digest:
                        raise AssetRegistryError(f"{src} does not match the digest given for it") from None
                    placed = self._place(tmp, final, digest, from_source=False, folders=folders)
                finally:
                    tmp.unlink(missing_ok=True)
                if placed:
                    src.unlink()
                return placed
            # no hard links on this file system: reserve the name, then rename over the reservation
            try:
                os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                raise AssetCollisionError(f"a file already exists at {final}") from None
            os.replace(src, final)
        else:
            src.unlink()
        folders.add(str(final.parent))
        return True

    def _undo_place(self, op: str, source: Path, final: Path) -> None:
        """Take back a file this call put at ``final`` (best effort; recover() finishes the rest)."""
        try:
            if op == "copy":
                final.unlink(missing_ok=True)
            elif op == "move":
                if source.exists():
                    final.unlink(missing_ok=True)
                elif final.exists():
                    shutil.move(str(final), str(source))
        except OSError:
            log.exception("could not undo placing %s; recover() will retry", final)

    def _duplicate(self, row: dict, digest: str, meta: dict, tags: list[str], license_tag: str | None) -> dict:
        if row["hash"] != digest:
            raise AssetRegistryError(f"uid collision: {row['uid']} already names a different file ({row['path']})")
        return self._merge_duplicate(row, meta, tags, license_tag)

    def _merge_duplicate(self, row: dict, meta: dict, tags: list[str], license_tag: str | None) -> dict:
        patch_tags = [t for t in tags if t not in row["tags"]]
        changed = bool(patch_tags) or (meta and deep_merge(row["meta"], meta) != row["meta"]) or (
            license_tag is not None and license_tag != row["license"])
        if changed:
            return self._updates.update_meta(row["uid"], meta, add_tags=patch_tags,
                                          license_tag=license_tag if license_tag is not None else _UNSET)
        return self._records.public(row)

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
            intent = conn.execute(
                "INSERT INTO file_intents(project_id, uid, op, src, dest, created_at, owner) VALUES (?,?,?,?,?,?,?)",
                (self.project_id, uid, "remove", trash, rec["path"], now, owner_token())).lastrowid
            conn.execute("DELETE FROM assets WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM asset_tags WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            conn.execute("DELETE FROM thumbnails WHERE project_id = ? AND uid = ?", (self.project_id, uid))
            payload = {"uid": uid, "type": rec["type"], "path": str(self._abs(rec["path"])),
                       "sidecar": str(self.sidecar_path_for(rec["path"]))}
            fired.append(self._emit(conn, self.HOOK_ASSET_REMOVED, payload,
                                    {"trashed_to": trash, "deleted_files": delete_files, "bytes": rec["bytes"],
                                     "meta": meta_view(rec)}))
        self._finish_remove(rec["uid"], rec["path"], trash)
        self._drop_intents([intent])
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
