"""The asset registry: SQLite rows, JSON sidecars, thumbnails, provenance, tags, licences and hooks.

Every change commits its row(s) and its event-log rows in one transaction, then writes the
sidecar beside the file (atomically) and runs the in-process hooks synchronously.  File
moves are journalled in ``file_intents`` first, so a process killed at any point leaves a
state that :meth:`AssetRegistry.recover` (run when a registry opens) brings back to "row +
file + sidecar" or "nothing", never half of it.
"""

from __future__ import annotations

import base64
import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ... import rights
from ...config import Workspace, get_setting, setup_logging, workspace
from ...confined import open_confined
from ...core import modder_hooks
from ...fsutil import (
    UnsafePathError,
    atomic_write_json,
    fsync_dir,
    open_temp,
    owner_alive,
    owner_token,
    parse_json_object,
    refuse_hidden,
    safe_relative,
    temp_owner,
)
from ...hashing import copy_and_hash as _copy_path_and_hash
from ...hashing import sha256_file
from ...hooks import get_hook_bus
from ...hooks.events import emit_many, utc_timestamp
from ...library.roots import IN_PLACE_PREFIX, in_place_path, in_place_sidecar, sidecar_location
from ...store import Database, get_database
from .thumbnails import WAVEFORM, get_thumbnailer, max_pixels_setting, preview_kind, write_preview

log = logging.getLogger("comfyvn.studio.core.asset_registry")

MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # a sidecar is a few KiB; a bigger one is not read whole
SIDECAR_SUFFIX = ".asset.json"
INCOMING_DIR = ".incoming"  # copies in progress, inside the assets root (same file system)
_DIGEST_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_project_id(project_id: Any) -> str:
    """``project_id`` if it is a valid project name (it names a folder: no ``/``, never ``.``/``..``)."""
    if not isinstance(project_id, str) or not PROJECT_RE.match(project_id):
        raise ValueError(f"project_id {project_id!r} must be 1-64 letters, digits, '.', '_' or '-' "
                         "(starting with a letter or digit)")
    return project_id
_UNSET: Any = object()
# keys of a metadata dict that are the asset's own fields (the original registry kept them in meta)
FIELD_KEYS = ("tags", "license", "origin", "version")
RIGHTS_VERSION = 1  # rows with an older rights_version get their rights re-derived by recover()
# rights filters of query_assets: parameter -> column (booleans 0/1; NULL = not stated, never matches)
RIGHTS_BOOL_FILTERS = {"credit_required": "credit_required", "derivatives": "derivatives_allowed",
                       "license_known": "license_known"}
# keys the registry derives and shows inside ``meta`` (never stored there)
DERIVED_META_KEYS = ("preview", "thumbnails")
SORT_COLUMNS = {"created_at": "created_at", "updated_at": "updated_at", "path": "path", "bytes": "bytes",
                "type": "type", "uid": "uid"}


def copy_and_hash(source: Any, dest_fh, *, fsync: bool = True) -> tuple[str, int]:
    """Copy and hash ``source`` into ``dest_fh``: an opened, checked source (read from its
    descriptor, never past its size limit) or a path of the registry's own hand-off files."""
    if isinstance(source, str | os.PathLike):
        return _copy_path_and_hash(source, dest_fh, fsync=fsync)
    return source.copy_into(dest_fh, fsync=fsync)


class AssetRegistryError(Exception):
    """Base class for registry errors a caller can act on."""


class AssetCollisionError(AssetRegistryError):
    """A different file already sits at the destination path."""


class AssetNotFoundError(AssetRegistryError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "asset not found"


Hook = Callable[[dict], None]
# listeners are shared by every registry instance of one (database, project) in this process
_LISTENERS: dict[tuple[str, str], dict[str, list[Hook]]] = {}
_LISTENERS_LOCK = threading.RLock()
_RECOVERED: set[tuple[str, str, str]] = set()


def normalise_tags(tags: Iterable[str] | str | None) -> list[str]:
    """Tags as a clean list: strings split on commas, trimmed, lower-cased, de-duplicated in order."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"tags must be strings, got {tag!r}")
        clean = " ".join(tag.strip().lower().split())
        if clean and clean not in out:
            out.append(clean)
    return out


def split_metadata(metadata: dict | None) -> tuple[dict, dict]:
    """``(free-form meta, fields)``: ``tags``, ``license``, ``origin`` and ``version`` inside a
    metadata dict are the asset's fields, not free-form keys (``preview``/``thumbnails`` are
    derived and dropped).  ``fields`` holds only the keys present: tags normalised (``None``
    clears them), an empty licence as ``""`` (clears it), origin as a string, version as an int."""
    meta = dict(metadata or {})
    fields: dict[str, Any] = {}
    for key in DERIVED_META_KEYS:
        meta.pop(key, None)
    if "tags" in meta:
        fields["tags"] = normalise_tags(meta.pop("tags"))
    if "license" in meta:
        value = meta.pop("license")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"metadata license must be a string or null, got {value!r}")
        fields["license"] = (value or "").strip()
    if "origin" in meta:
        value = meta.pop("origin")
        if value is not None and not isinstance(value, str):
            raise ValueError(f"metadata origin must be a string or null, got {value!r}")
        if value and value.strip():
            fields["origin"] = value.strip()
    if "version" in meta:
        value = meta.pop("version")
        if value is not None:
            try:
                fields["version"] = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"metadata version must be an integer, got {value!r}") from None
    return meta, fields


def _stated_terms(meta: dict, provenance: dict) -> tuple[dict, dict | None]:
    """``(meta without license_terms, the terms a pull or caller stated)``: ``license_terms`` in the
    metadata (a pull's normalised metadata carries them) or in the provenance; None when neither."""
    given = meta.get("license_terms", provenance.get("license_terms"))
    if "license_terms" in meta:
        meta = {k: v for k, v in meta.items() if k != "license_terms"}
    if given is None:
        return meta, None
    return meta, _check_terms(given, default_source="provider")


def _check_terms(terms: Any, *, default_source: str) -> dict:
    """Validated ``license_terms`` (unknown keys dropped; ``source`` defaults to ``default_source``)."""
    if not isinstance(terms, dict):
        raise ValueError(f"license_terms must be a JSON object, got {type(terms).__name__}")
    level = terms.get("commercial_use")
    if level is not None and level not in rights.COMMERCIAL_LEVELS:
        raise ValueError(f"license_terms.commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)} "
                         f"or null, got {level!r}")
    for key in ("credit_required", "derivatives_allowed", "relicense_allowed"):
        if terms.get(key) is not None and not isinstance(terms[key], bool):
            raise ValueError(f"license_terms.{key} must be true, false or null, got {terms[key]!r}")
    out = {key: terms.get(key) for key in rights.TERM_KEYS}
    if not out["source"] and any(out[k] is not None for k in rights.TERM_KEYS if k not in ("source",
                                                                                         "base_model_license")):
        out["source"] = default_source
    return out


def _stored_terms(rec: dict) -> tuple[dict, dict | None]:
    """The terms a row registered before rights were stored carries (see ``_rederive_rights``)."""
    prov = rec["provenance"]
    raw, provider = prov.get("provider_metadata"), prov.get("provider")
    meta = {k: v for k, v in rec["meta"].items() if k != "license_terms"}
    try:
        stated = _stated_terms(rec["meta"], {})[1]
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
        return meta, stated if stated is not None else _check_terms(prov["license_terms"], default_source="provider")
    except (KeyError, ValueError):
        return meta, stated


def _deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def encode_cursor(value: Any, uid: str) -> str:
    """The ``next_cursor`` of a page: its last row's sort value and uid."""
    return base64.urlsafe_b64encode(json.dumps([value, uid]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    """``(sort value, uid)`` of a cursor :func:`encode_cursor` made; ``ValueError`` for anything
    else (an object, a list, a number SQLite cannot hold, bytes that are not the registry's form)."""
    try:
        pad = "=" * (-len(cursor) % 4)
        value, uid = json.loads(base64.urlsafe_b64decode(cursor + pad))
        if not isinstance(uid, str) or isinstance(value, bool) or not isinstance(value, str | int | float | None):
            raise ValueError
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise ValueError
        if encode_cursor(value, uid) != cursor.rstrip("="):
            raise ValueError
        return value, uid
    except Exception:
        raise ValueError(f"invalid cursor {cursor[:80]!r}: pass next_cursor from the previous page unchanged") from None


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

    HOOK_ASSET_REGISTERED = "asset_registered"
    HOOK_ASSET_META_UPDATED = "asset_meta_updated"
    HOOK_ASSET_REMOVED = "asset_removed"
    HOOK_SIDECAR_WRITTEN = "asset_sidecar_written"
    HOOK_EVENTS = (HOOK_ASSET_REGISTERED, HOOK_ASSET_META_UPDATED, HOOK_ASSET_REMOVED, HOOK_SIDECAR_WRITTEN)
    MODDER_TOPICS = {
        HOOK_ASSET_REGISTERED: ("on_asset_registered", "on_asset_saved"),
        HOOK_ASSET_META_UPDATED: ("on_asset_meta_updated",),
        HOOK_ASSET_REMOVED: ("on_asset_removed",),
        HOOK_SIDECAR_WRITTEN: ("on_asset_sidecar_written",),
    }

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
        self._root_real = os.path.realpath(self.assets_root)
        self._root_str = str(self.assets_root)
        self.make_thumbnails = make_thumbnails
        # registry.fsync (default true): an asset's bytes and its directory entry reach the disk
        # before its row commits.  Sidecars and thumbnails are derived from the row, so they are
        # only written atomically (rename), not fsynced: recover() and the enforcer rebuild them.
        self.fsync = bool(get_setting("registry.fsync", True, self.ws))
        self.db: Database = get_database(Path(db_path).resolve() if db_path else self.ws.db_path)
        self._key = (str(self.db.path), project_id)
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
        self._check_event(event)
        if not callable(callback):
            raise TypeError("callback must be callable")
        with _LISTENERS_LOCK:
            listeners = _LISTENERS.setdefault(self._key, {}).setdefault(event, [])
            if callback not in listeners:
                listeners.append(callback)

    def remove_hook(self, event: str, callback: Hook) -> bool:
        """Detach a callback; returns False (and raises nothing) when it was not attached."""
        with _LISTENERS_LOCK:
            listeners = _LISTENERS.get(self._key, {}).get(event, [])
            if callback in listeners:
                listeners.remove(callback)
                return True
        return False

    def iter_hooks(self, event: str | None = None) -> dict[str, tuple[Hook, ...]]:
        """``{event: (callback, ...)}`` attached for this project in this process: every event,
        or only ``event`` (``ValueError`` for an unknown one)."""
        if event is not None:
            self._check_event(event)
        with _LISTENERS_LOCK:
            snapshot = {e: tuple(cbs) for e, cbs in _LISTENERS.get(self._key, {}).items()}
        return {e: snapshot.get(e, ()) for e in ((event,) if event is not None else self.HOOK_EVENTS)}

    def describe_hooks(self) -> dict[str, list[str]]:
        """Listener names per event, as ``GET /assets/debug/hooks`` shows them."""
        return {event: [f"{getattr(cb, '__module__', '?')}.{getattr(cb, '__qualname__', repr(cb))}" for cb in cbs]
                for event, cbs in self.iter_hooks().items()}

    def _check_event(self, event: str) -> None:
        if event not in self.HOOK_EVENTS:
            raise ValueError(f"unknown registry hook {event!r}; use one of {', '.join(self.HOOK_EVENTS)}")

    def _run_hooks(self, fired: list[tuple[str, dict]]) -> None:
        for event, payload in fired:
            with _LISTENERS_LOCK:
                listeners = list(_LISTENERS.get(self._key, {}).get(event, []))
            for cb in listeners:
                try:
                    cb(dict(payload))
                except Exception:
                    log.exception("registry hook %r failed for %s", cb, event)
        if fired:
            get_hook_bus(self.db).poke()
            modder_hooks.deliver_pending(self.db)

    def _emit(self, conn, event: str, payload: dict, extra: dict | None = None) -> tuple[str, dict]:
        """Write the modder envelope(s) for ``event`` and return the in-process hook call."""
        return self._emit_all(conn, [(event, payload, extra)])[0]

    def _emit_all(self, conn, calls: list[tuple[str, dict, dict | None]]) -> list[tuple[str, dict]]:
        """Write the modder envelopes of several hook calls in one statement (same transaction)."""
        items = []
        for event, payload, extra in calls:
            data = {**payload, **(extra or {}), "project_id": self.project_id}
            items.extend((topic, data) for topic in self.MODDER_TOPICS[event])
        envelopes = emit_many(conn, items, project_id=self.project_id)
        if log.isEnabledFor(logging.DEBUG):
            for env in envelopes:
                log.debug("hook %s %s", env["event"], json.dumps(env["data"], ensure_ascii=False, default=str))
        return [(event, payload) for event, payload, _ in calls]

    # ------------------------------------------------------------------ paths
    def _abs(self, rel: str) -> Path:
        return Path(self._abs_str(rel))

    def _abs_str(self, rel: str) -> str:
        if rel.startswith(IN_PLACE_PREFIX):  # a library file, where it lies (comfyvn.library.roots)
            return in_place_path(self.ws, rel)
        return self._root_str + os.sep + rel

    def sidecar_path_for(self, rel: str) -> Path:
        """Where the sidecar of the asset at ``rel`` (relative to the assets root) lives."""
        if rel.startswith(IN_PLACE_PREFIX):  # a library file: beside it or in the workspace's mirror
            return in_place_sidecar(self.ws, self.project_id, rel)
        return Path(self._root_str + os.sep + rel + SIDECAR_SUFFIX)

    def _confine(self, rel: str, what: str) -> Path:
        """The resolved ``assets_root / rel``; refuses anything that leaves the assets root.

        ``rel`` has passed :func:`safe_relative` (no ``..``, not absolute), so only a symlink
        can lead out: walk the components and resolve fully only when one is a link.
        """
        path = self._root_real
        for part in rel.split("/"):
            path = path + os.sep + part
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                return Path(self._root_real + os.sep + rel)  # nothing below exists: no link to follow
            except NotADirectoryError:  # a file where the path needs a folder
                raise UnsafePathError(f"{what} {rel!r} goes through a file as if it were a folder") from None
            if stat.S_ISLNK(mode):
                candidate = os.path.realpath(self._root_real + os.sep + rel)
                if not candidate.startswith(self._root_real + os.sep):
                    raise UnsafePathError(f"{what} {rel!r} escapes {self._root_real} (symlink or traversal)")
                return Path(candidate)
        return Path(path)

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
            as_folder = text.endswith("/") or (not pure.suffix and self._confine(str(pure), "dest_relative")
                                               != source_real)
            rel = str(pure / source.name) if as_folder else str(pure)
        if rel.endswith(SIDECAR_SUFFIX):
            raise UnsafePathError(f"dest_relative {rel!r} may not end with {SIDECAR_SUFFIX}")
        refuse_hidden(rel)
        return rel, self._confine(rel, "dest_relative")

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

        if not isinstance(asset_type, str) or not _TYPE_RE.match(asset_type):
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
        if not real.startswith(self._root_real + os.sep):
            raise sources.CopyRequiredError(
                f"copy=false registers a file where it lies, so it must already be inside this project's assets "
                f"root ({self._root_real}); {source} is not. Use copy=true to copy it in (the original is left alone)")
        rel = real[len(self._root_real) + 1:].replace(os.sep, "/")
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
            known = self._row(digest.lower()[:16])
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
            existing = self._row(uid)
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
        meta, stated = _stated_terms(meta, prov)
        if stated is not None:
            prov["license_terms"] = stated  # what the source said: a cleared licence falls back to it
        record = {
            "uid": uid, "type": asset_type, "path": rel, "hash": digest, "bytes": size, "tags": tag_list,
            "license": license_tag or None, "origin": origin or prov.get("provider") or "local", "version": 1,
            "created_at": float(created_at) if created_at is not None else now, "updated_at": now,
            "meta": meta, "preview": self._preview_for(uid, rel), "provenance": prov,
            "license_terms": rights.asset_rights(license_tag or None, stated, base_model=meta.get("base_model")),
        }
        record["license_known"] = rights.licence_known(record["license"], record["license_terms"])
        return {"record": record, "op": op, "source": source_real, "final": final, "tmp": tmp, "merge": merge,
                "placed": False}

    def _check_not_another_asset(self, source_real: Path, digest: str) -> None:
        """Refuse a source that is the registered file of another asset whose bytes it no longer holds."""
        real = str(source_real)
        if not real.startswith(self._root_real + os.sep):
            return
        rel = real[len(self._root_real) + 1:].replace(os.sep, "/")
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
            self._schedule_thumbnails(plan["record"])
            results[plan["index"]] = self._public(plan["record"])

    def _commit_one(self, conn, plan: dict, on_commit) -> list[tuple[str, dict]] | BaseException | None:
        """Insert one planned row inside the group transaction (under a savepoint, so a clash
        or a failed sidecar undoes only this item).  Returns the hook calls to run, or the
        item's exception, or None when another process holds the same bytes (``plan["clash"]``)."""
        rec = plan["record"]
        conn.execute("SAVEPOINT register_one")
        try:
            try:
                self._insert_row(conn, rec)
            except sqlite3.IntegrityError:  # the uid or the path is taken (by another process)
                plan["clash"] = self._row(rec["uid"], conn)
                if plan["clash"] is not None:
                    conn.execute("ROLLBACK TO register_one")
                    conn.execute("RELEASE register_one")
                    return None
                self._check_path_free(conn, rec["path"])
                raise
            conn.execute("DELETE FROM file_intents WHERE id = ?", (plan["intent"],))
            fired = self._emit_all(conn, [
                (self.HOOK_ASSET_REGISTERED, self._payload(rec, include_meta=True),
                 {"bytes": rec["bytes"], "license_terms": dict(rec["license_terms"])}),
                (self.HOOK_SIDECAR_WRITTEN, self._sidecar_payload(rec), None)])
            if rec["preview"].get("kind"):
                self._mark_thumbnails(conn, rec, "pending")
            if on_commit is not None:
                on_commit(conn, plan["index"], self._public(rec))
            # written under the write lock: no other writer can slip an older sidecar in after
            self._write_sidecar(rec)
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
        incoming = self._root_str + os.sep + INCOMING_DIR
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

    def _check_path_free(self, conn, rel: str) -> None:
        other = conn.execute("SELECT uid FROM assets WHERE project_id = ? AND path = ?",
                             (self.project_id, rel)).fetchone()
        if other is not None:
            raise AssetCollisionError(
                f"{rel!r} is already registered as asset {other[0]} but its file now has different bytes; "
                "run the enforcer (comfyvn-enforcer) to inspect it")

    def _duplicate(self, row: dict, digest: str, meta: dict, tags: list[str], license_tag: str | None) -> dict:
        if row["hash"] != digest:
            raise AssetRegistryError(f"uid collision: {row['uid']} already names a different file ({row['path']})")
        return self._merge_duplicate(row, meta, tags, license_tag)

    def _merge_duplicate(self, row: dict, meta: dict, tags: list[str], license_tag: str | None) -> dict:
        patch_tags = [t for t in tags if t not in row["tags"]]
        changed = bool(patch_tags) or (meta and _deep_merge(row["meta"], meta) != row["meta"]) or (
            license_tag is not None and license_tag != row["license"])
        if changed:
            return self.update_asset_meta(row["uid"], meta, add_tags=patch_tags,
                                          license_tag=license_tag if license_tag is not None else _UNSET)
        return self._public(row)

    def _preview_for(self, uid: str, rel: str) -> dict:
        kind = preview_kind(rel)
        if kind == "image":
            sizes = [str(s) for s in get_setting("registry.thumbnail_sizes", [256, 512], self.ws)]
            return {"kind": "image", "thumbnails": {s: self._thumb_rel(uid, s) for s in sizes}}
        if kind == "audio":
            return {"kind": "audio", "waveform": self._thumb_rel(uid, WAVEFORM)}
        return {"kind": None}

    def _thumb_rel(self, uid: str, size: str) -> str:
        ext = "json" if size == WAVEFORM else "png"
        return f"{uid[:2]}/{uid}_{size}.{ext}"

    # ------------------------------------------------------------------ rows
    def _insert_row(self, conn, rec: dict) -> None:
        conn.execute(
            "INSERT INTO assets(project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at,"
            " updated_at, meta, preview, provenance, search_text, sidecar_pending, license_terms, commercial_rank,"
            " credit_required, derivatives_allowed, license_known, rights_version)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0,?,?,?,?,?,?)",
            (self.project_id, rec["uid"], rec["type"], rec["path"], rec["hash"], rec["bytes"], json.dumps(rec["tags"]),
             rec["license"], rec["origin"], rec["version"], rec["created_at"], rec["updated_at"],
             json.dumps(rec["meta"], ensure_ascii=False), json.dumps(rec["preview"]),
             json.dumps(rec["provenance"], ensure_ascii=False), self._search_text(rec),
             *self._rights_columns(rec), RIGHTS_VERSION))
        if rec["tags"]:
            conn.executemany("INSERT OR IGNORE INTO asset_tags(project_id, uid, tag) VALUES (?,?,?)",
                             [(self.project_id, rec["uid"], t) for t in rec["tags"]])

    @staticmethod
    def _rights_columns(rec: dict) -> tuple:
        """``(license_terms JSON, commercial_rank, credit_required, derivatives_allowed, license_known)``."""
        terms = rec["license_terms"]

        def flag(value: Any) -> int | None:
            return None if value is None else int(value)

        return (json.dumps(terms, ensure_ascii=False), rights.commercial_rank(terms.get("commercial_use")),
                flag(terms.get("credit_required")), flag(terms.get("derivatives_allowed")),
                int(rights.licence_known(rec["license"], terms)))

    @staticmethod
    def _search_text(rec: dict) -> str:
        parts = [rec["path"], rec["type"], rec.get("license") or "", " ".join(rec["tags"]),
                 json.dumps(rec["meta"], ensure_ascii=False)]
        return " ".join(parts).lower()

    def _row(self, uid: str, conn=None) -> dict | None:
        row = (conn or self.db.conn).execute("SELECT * FROM assets WHERE project_id = ? AND uid = ?",
                                             (self.project_id, uid)).fetchone()
        return self._decode(row) if row else None

    def _decode(self, row) -> dict:
        rec = dict(row)
        for key in ("tags", "meta", "preview", "provenance"):
            rec[key] = json.loads(rec[key]) if rec[key] else ({} if key != "tags" else [])
        rec.pop("search_text", None)
        stored = json.loads(rec.get("license_terms") or "{}")
        rec["license_terms"] = {key: stored.get(key) for key in rights.TERM_KEYS}
        rec["license_known"] = bool(rec.get("license_known"))
        for key in ("commercial_rank", "credit_required", "derivatives_allowed", "rights_version"):
            rec.pop(key, None)  # indexed copies of license_terms
        return rec

    def _public(self, rec: dict) -> dict:
        out = {k: v for k, v in rec.items() if k not in ("sidecar_pending", "project_id")}
        out["project_id"] = self.project_id
        out["abs_path"] = self._abs_str(rec["path"])
        out["sidecar"] = self._sidecar_str(rec["path"])
        out["meta"] = meta = self.meta_view(rec)
        # the original registry's keys: id, thumb (relative to THUMB_ROOT) and links (relative paths)
        preview = meta["preview"]
        out["id"] = rec["uid"]
        out["thumb"] = preview.get("default")
        links: dict[str, Any] = {"file": rec["path"], "sidecar": rec["path"] + SIDECAR_SUFFIX}
        if out["thumb"]:
            links["thumbnail"] = out["thumb"]
        if preview.get("paths"):
            links["thumbnails"] = dict(preview["paths"])
        out["links"] = links
        return out

    def meta_view(self, rec: dict) -> dict:
        """An asset's ``meta`` as records, hook payloads and sidecars show it: the free-form
        metadata with the asset's fields (``tags``, ``license``, ``origin``, ``version``) and its
        ``preview`` (``paths`` ``{"256": ..., "512": ...}`` relative to the thumbnail root, and
        the ``default`` one) inside, as the original registry kept them."""
        view = dict(rec["meta"])
        view.update(tags=list(rec["tags"]), license=rec["license"], origin=rec["origin"], version=rec["version"])
        preview = dict(rec["preview"])
        if preview.get("thumbnails"):
            preview["paths"] = dict(preview["thumbnails"])
            preview["default"] = next(iter(preview["paths"].values()))
            view["thumbnails"] = dict(preview["paths"])
        elif preview.get("waveform"):
            preview["path"] = preview["default"] = preview["waveform"]
        view["preview"] = preview
        return view

    def _payload(self, rec: dict, *, include_meta: bool) -> dict:
        abs_path = self._abs_str(rec["path"])
        payload = {"uid": rec["uid"], "type": rec["type"], "path": abs_path}
        if include_meta:
            payload["meta"] = self.meta_view(rec)
        payload["sidecar"] = self._sidecar_str(rec["path"])
        return payload

    def _sidecar_payload(self, rec: dict) -> dict:
        return {"uid": rec["uid"], "type": rec["type"], "sidecar": self._sidecar_str(rec["path"]),
                "rel_path": rec["path"]}

    # ------------------------------------------------------------------ sidecars
    def sidecar_document(self, rec: dict) -> dict:
        """The sidecar JSON for a record (the database is the source of truth)."""
        return {
            "uid": rec["uid"], "type": rec["type"], "path": rec["path"], "hash": rec["hash"],
            "bytes": rec["bytes"], "tags": rec["tags"], "license": rec["license"], "origin": rec["origin"],
            "version": rec["version"], "created_at": utc_timestamp(rec["created_at"]), "meta": self.meta_view(rec),
            "preview": rec["preview"], "provenance": rec["provenance"], "license_terms": rec["license_terms"],
        }

    def _sync_sidecars(self, uids: Iterable[str], batch: int = 64) -> int:
        """Write the sidecars of rows marked pending, from the row as committed *now*.

        The write happens under the database write lock, so two processes updating one
        asset can never leave the older version on disk.
        """
        written = 0
        pending = list(uids)
        for i in range(0, len(pending), batch):
            with self.db.transaction() as conn:
                for uid in pending[i:i + batch]:
                    rec = self._row(uid, conn)
                    if rec is None or not rec["sidecar_pending"] or not self._abs(rec["path"]).exists():
                        continue
                    self._write_sidecar(rec)
                    conn.execute("UPDATE assets SET sidecar_pending = 0 WHERE project_id = ? AND uid = ?",
                                 (self.project_id, uid))
                    written += 1
        return written

    def read_sidecar(self, uid: str) -> dict:
        """The parsed sidecar of an asset (raises AssetRegistryError naming the file if missing or corrupt)."""
        rec = self._require(uid)
        path = self.sidecar_path_for(rec["path"])
        try:  # the confined reader: a sidecar swapped for a symlink is refused, never followed
            fh, _ = open_confined(*(sidecar_location(self.ws, self.project_id, rec["path"])
                                    if rec["path"].startswith(IN_PLACE_PREFIX)
                                    else (self.assets_root, rec["path"] + SIDECAR_SUFFIX)), what="sidecar")
        except FileNotFoundError:
            raise AssetRegistryError(f"sidecar {path} is missing; run the enforcer to rewrite it") from None
        with fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
        if len(raw) > MAX_SIDECAR_BYTES:
            raise AssetRegistryError(f"sidecar {path} is over {MAX_SIDECAR_BYTES} bytes; run the enforcer to rewrite it")
        data, problem = parse_json_object(raw)
        if data is None:
            raise AssetRegistryError(f"sidecar {path} is {problem}; run the enforcer to rewrite it")
        return data

    def rewrite_sidecar(self, uid: str, *, reason: str = "rewrite") -> dict:
        """Rewrite a sidecar from the database row (the enforcer's fix).

        The sidecar's contents change, so both ``asset_meta_updated`` and
        ``asset_sidecar_written`` fire (with ``reason`` in the modder envelopes).
        """
        with self.db.transaction() as conn:
            rec = self._require(uid, conn)
            if not self._abs(rec["path"]).exists():
                raise AssetRegistryError(f"asset {uid}: file {self._abs(rec['path'])} is missing; "
                                         "not writing a sidecar for it")
            fired = self._emit_all(conn, [
                (self.HOOK_ASSET_META_UPDATED, self._payload(rec, include_meta=True),
                 {"tags": rec["tags"], "license": rec["license"], "reason": reason}),
                (self.HOOK_SIDECAR_WRITTEN, self._sidecar_payload(rec), {"reason": reason})])
            self._write_sidecar(rec)
            conn.execute("UPDATE assets SET sidecar_pending = 0 WHERE project_id = ? AND uid = ?",
                         (self.project_id, uid))
        self._run_hooks(fired)
        return self._public(rec)

    def ensure_sidecar(self, uid: str, *, overwrite: bool = False) -> Path:
        """The asset's sidecar path, writing it from the database when missing (or when
        ``overwrite``; that fires ``asset_meta_updated`` and ``asset_sidecar_written``)."""
        rec = self._require(uid)
        path = self.sidecar_path_for(rec["path"])
        if overwrite or not path.is_file():
            self.rewrite_sidecar(uid, reason="ensure_sidecar")
        return path

    def _write_sidecar(self, rec: dict) -> None:
        """Write the sidecar (atomically) and, with ``meta_root``, the original's legacy mirror."""
        doc = self.sidecar_document(rec)
        atomic_write_json(self.sidecar_path_for(rec["path"]), doc, fsync=False)
        mirror = self.legacy_sidecar_path(rec["path"])
        if mirror is not None:
            try:  # a derived copy for old tooling: its failure never undoes the change
                mirror.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(mirror, {"id": rec["uid"], **doc}, fsync=False)
            except OSError:
                log.exception("could not write the legacy sidecar mirror %s", mirror)

    def legacy_sidecar_path(self, rel: str) -> Path | None:
        """``<meta_root>/<rel without suffix>.json`` (the original's mirror), or None without meta_root."""
        return (self.meta_root / rel).with_suffix(".json") if self.meta_root is not None else None

    # ------------------------------------------------------------------ queries
    def get_asset(self, uid: str) -> dict | None:
        rec = self._row(uid)
        return self._public(rec) if rec else None

    def resolve_path(self, uid: str) -> Path | None:
        """The absolute path of an asset's file, or None for an unknown uid."""
        rec = self._row(uid)
        return self._abs(rec["path"]) if rec else None

    def _require(self, uid: str, conn=None) -> dict:
        rec = self._row(uid, conn)
        if rec is None:
            raise AssetNotFoundError(f"no asset {uid!r} in project {self.project_id!r}")
        return rec

    def find_by_hash(self, digest: str) -> dict | None:
        return self.find_by_any_hash(digest)  # every hash form (comfyvn.library.aliases)

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
        if sort not in SORT_COLUMNS:
            raise ValueError(f"sort must be one of {', '.join(SORT_COLUMNS)}")
        if tags_mode not in ("all", "any"):
            raise ValueError("tags_mode must be 'all' or 'any'")
        if not 1 <= int(limit) <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        where = ["a.project_id = ?"]
        params: list[Any] = [self.project_id]
        if asset_type:
            where.append("a.type = ?")
            params.append(asset_type)
        if license is not None:
            if license == "":
                where.append("a.license IS NULL")
            else:
                where.append("a.license = ?")
                params.append(license)
        if commercial_use is not None:
            rank = rights.commercial_rank(commercial_use)
            if rank is None:
                raise ValueError(f"commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)}, "
                                 f"got {commercial_use!r}")
            # an IN list, not ">=": each level is an index range already in created_at order (x100 faster)
            levels = range(rank, len(rights.COMMERCIAL_LEVELS))
            where.append(f"a.commercial_rank IN ({','.join('?' * len(levels))})")
            params.extend(levels)
        for name, value in (("credit_required", credit_required), ("derivatives", derivatives),
                            ("license_known", license_known)):
            if value is None:
                continue
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            where.append(f"a.{RIGHTS_BOOL_FILTERS[name]} = ?")
            params.append(int(value))
        if hash:
            where.append("a.uid = ? AND a.hash = ?")  # primary key: uid = first 16 hex digits
            params.extend([hash.lower()[:16], hash.lower()])
        tag_list = normalise_tags(tags)
        if tag_list:
            marks = ",".join("?" * len(tag_list))
            if tags_mode == "all":
                for tag in tag_list:
                    where.append("EXISTS (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id"
                                 " AND t.tag = ? AND t.uid = a.uid)")
                    params.append(tag)
            else:
                where.append(f"EXISTS (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id"
                             f" AND t.uid = a.uid AND t.tag IN ({marks}))")
                params.extend(tag_list)
        if text:
            where.append("a.search_text LIKE ? ESCAPE '\\'")
            params.append("%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
        filter_sql, filter_params = " AND ".join(where), list(params)
        col = SORT_COLUMNS[sort]
        order = "DESC" if descending else "ASC"
        if cursor:
            value, uid = decode_cursor(cursor)
            op = "<" if descending else ">"
            where.append(f"(a.{col}, a.uid) {op} (?, ?)")  # a row value: an index range, not a filter
            params.extend([value, uid])
        sql = (f"SELECT a.* FROM assets a WHERE {' AND '.join(where)} ORDER BY a.{col} {order}, a.uid {order}"
               f" LIMIT ? OFFSET ?")
        rows = self.db.query(sql, (*params, int(limit) + 1, 0 if cursor else int(offset)))
        items = [self._public(self._decode(r)) for r in rows[:limit]]
        page: dict[str, Any] = {"items": items, "next_cursor": None}
        if len(rows) > limit and items:
            last = items[-1]
            page["next_cursor"] = encode_cursor(last[col], last["uid"])
        if with_total:
            page["total"] = self.db.query_one(f"SELECT COUNT(*) FROM assets a WHERE {filter_sql}", filter_params)[0]
        return page

    def list_assets(self, asset_type: str | None = None, *, hash_value: str | None = None,
                    tags: Iterable[str] | str | None = None, text: str | None = None, limit: int | None = None,
                    **filters: Any) -> list[dict]:
        """Assets matching the filters of :meth:`query_assets` (``hash_value`` is ``hash``).

        ``limit=None`` returns every match (read in pages of 1000), as the original did."""
        if hash_value is not None:
            filters["hash"] = hash_value
        if limit is not None:
            return self.query_assets(asset_type=asset_type, tags=tags, text=text, limit=limit, **filters)["items"]
        if filters.get("offset") or filters.get("cursor"):
            raise ValueError("offset/cursor need a limit (or use query_assets)")
        items: list[dict] = []
        cursor = None
        while True:
            page = self.query_assets(asset_type=asset_type, tags=tags, text=text, limit=1000, cursor=cursor,
                                     **filters)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def iter_assets(self, batch: int = 500) -> Iterator[dict]:
        """Every asset of the project, in path order, read in batches."""
        cursor = None
        while True:
            page = self.query_assets(limit=batch, cursor=cursor, sort="path", descending=False)
            yield from page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return

    def count(self) -> int:
        return self.db.query_one("SELECT COUNT(*) FROM assets WHERE project_id = ?", (self.project_id,))[0]

    def facets(self) -> dict[str, list[tuple[str, int]]]:
        """Types, tags and licences with counts (for filter drop-downs)."""
        q = self.db.query
        pid = (self.project_id,)
        return {
            "types": [(r[0], r[1]) for r in q("SELECT type, COUNT(*) FROM assets WHERE project_id = ? GROUP BY type"
                                              " ORDER BY type", pid)],
            "licenses": [(r[0], r[1]) for r in q("SELECT license, COUNT(*) FROM assets WHERE project_id = ?"
                                                 " AND license IS NOT NULL GROUP BY license ORDER BY license", pid)],
            "tags": [(r[0], r[1]) for r in q("SELECT tag, COUNT(*) FROM asset_tags WHERE project_id = ? GROUP BY tag"
                                             " ORDER BY COUNT(*) DESC, tag LIMIT 500", pid)],
        }

    def to_dataframe(self, **filters: Any):
        """Matching assets as a pandas DataFrame (every asset when no filter is given)."""
        import pandas as pd

        rows = list(self.iter_assets()) if not filters else self.list_assets(**{"limit": 1000, **filters})
        columns = ["uid", "type", "path", "hash", "bytes", "tags", "license", "origin", "version", "created_at",
                   "updated_at", "meta", "provenance", "sidecar"]
        frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
        for col in ("created_at", "updated_at"):
            frame[col] = pd.to_datetime(frame[col], unit="s", utc=True)
        return frame

    # ------------------------------------------------------------------ updates
    def update_asset_meta(self, uid: str, metadata: dict | None = None, *, replace: bool = False,
                          add_tags: Iterable[str] | str | None = None,
                          remove_tags: Iterable[str] | str | None = None,
                          license_tag: Any = _UNSET, expected_version: int | None = None) -> dict:
        """Merge ``metadata`` into an asset (``replace=True`` swaps it); preview and thumbnails stay.

        ``tags``, ``license``, ``origin`` and ``version`` inside ``metadata`` are the asset's
        fields: ``tags`` sets the tag list (then ``add_tags``/``remove_tags`` apply), ``license``
        sets the licence (empty or null clears it; ``license_tag`` wins when both are given),
        ``origin`` sets the origin and ``version`` is the version the caller read (as
        ``expected_version``), so a record's ``meta`` can be edited and sent back as it is.

        ``expected_version`` makes the update conditional (optimistic concurrency): a row
        changed meanwhile by someone else raises instead of silently losing their edit.
        """
        if metadata is not None and not isinstance(metadata, dict):
            raise ValueError("metadata must be a JSON object (dict)")
        return self._update_many([uid], metadata=metadata, replace=replace, add_tags=normalise_tags(add_tags),
                                 remove_tags=normalise_tags(remove_tags), license_tag=license_tag,
                                 expected_version=expected_version)[0]

    def bulk_update_tags(self, uids: Iterable[str], add_tags: Iterable[str] | str | None = None,
                         remove_tags: Iterable[str] | str | None = None, license_tag: Any = _UNSET) -> list[dict]:
        """Add/remove tags and override (``"cc0"``) or clear (``None``) the licence of many assets in one transaction."""
        uids = list(dict.fromkeys(uids))
        return self._update_many(uids, metadata=None, replace=False, add_tags=normalise_tags(add_tags),
                                 remove_tags=normalise_tags(remove_tags), license_tag=license_tag)

    def _update_many(self, uids: list[str], *, metadata: dict | None, replace: bool, add_tags: list[str],
                     remove_tags: list[str], license_tag: Any, expected_version: int | None = None) -> list[dict]:
        fields: dict[str, Any] = {}
        terms_given: dict | None = None
        if metadata is not None:
            metadata, fields = split_metadata(metadata)
            if "license_terms" in metadata:  # terms a person sets are a field, not free-form meta
                terms_given = _check_terms(metadata.pop("license_terms"), default_source="user")
        if license_tag is _UNSET and "license" in fields:
            license_tag = fields["license"]
        if "version" in fields:
            if expected_version is not None and expected_version != fields["version"]:
                raise ValueError(f"metadata version {fields['version']} disagrees with expected_version "
                                 f"{expected_version}")
            expected_version = fields["version"]
        if license_tag is not _UNSET and license_tag is not None and not isinstance(license_tag, str):
            raise ValueError("license_tag must be a string, or None to clear it")
        if license_tag == "":
            license_tag = None
        updated: list[dict] = []
        fired: list[tuple[str, dict]] = []
        calls: list[tuple[str, dict, dict | None]] = []
        now = time.time()
        with self.db.transaction() as conn:
            records = []
            missing = []
            for uid in uids:
                rec = self._row(uid, conn)
                (missing.append(uid) if rec is None else records.append(rec))
            if missing:
                raise AssetNotFoundError(f"unknown asset uid(s) in project {self.project_id!r}: {', '.join(missing)}")
            for rec in records:
                if expected_version is not None and rec["version"] != expected_version:
                    raise AssetRegistryError(
                        f"asset {rec['uid']} changed meanwhile (version {rec['version']}, expected {expected_version})")
                new = dict(rec)
                if metadata is not None:
                    new["meta"] = dict(metadata) if replace else _deep_merge(rec["meta"], metadata)
                base_tags = fields.get("tags", rec["tags"])
                new["tags"] = [t for t in base_tags if t not in remove_tags] + [
                    t for t in add_tags if t not in base_tags and t not in remove_tags]
                if license_tag is not _UNSET:
                    new["license"] = license_tag
                new["origin"] = fields.get("origin", rec["origin"])
                given = None if terms_given == rec["license_terms"] else terms_given  # a meta round trip
                if license_tag is not _UNSET or given is not None:
                    new["license_terms"] = self._rights_after_change(rec, new, given)
                    new["license_known"] = rights.licence_known(new["license"], new["license_terms"])
                if (new["meta"], new["tags"], new["license"], new["origin"], new["license_terms"]) == (
                        rec["meta"], rec["tags"], rec["license"], rec["origin"], rec["license_terms"]):
                    updated.append(rec)
                    continue
                new["version"] = rec["version"] + 1
                new["updated_at"] = now
                conn.execute(
                    "UPDATE assets SET meta = ?, tags = ?, license = ?, origin = ?, version = ?, updated_at = ?,"
                    " search_text = ?, sidecar_pending = 1, license_terms = ?, commercial_rank = ?,"
                    " credit_required = ?, derivatives_allowed = ?, license_known = ?"
                    " WHERE project_id = ? AND uid = ?",
                    (json.dumps(new["meta"], ensure_ascii=False), json.dumps(new["tags"]), new["license"],
                     new["origin"], new["version"], now, self._search_text(new), *self._rights_columns(new),
                     self.project_id, rec["uid"]))
                conn.execute("DELETE FROM asset_tags WHERE project_id = ? AND uid = ?", (self.project_id, rec["uid"]))
                conn.executemany("INSERT INTO asset_tags(project_id, uid, tag) VALUES (?,?,?)",
                                 [(self.project_id, rec["uid"], t) for t in new["tags"]])
                calls.append((self.HOOK_ASSET_META_UPDATED, self._payload(new, include_meta=True),
                              {"tags": new["tags"], "license": new["license"],
                               "license_terms": dict(new["license_terms"])}))
                calls.append((self.HOOK_SIDECAR_WRITTEN, self._sidecar_payload(new), None))
                updated.append(new)
            if calls:
                fired = self._emit_all(conn, calls)
        self._sync_sidecars([r["uid"] for r in updated if r["updated_at"] == now])
        self._run_hooks(fired)
        return [self._public(r) for r in updated]

    @staticmethod
    def _rights_after_change(rec: dict, new: dict, terms_given: dict | None) -> dict:
        """An asset's rights after its licence or terms changed: terms a person gives win (over the
        current ones, term by term); a new
        licence decides by itself; a cleared one falls back to what the source stated.  The base
        model's licence stays."""
        keep = {"base_model_license": rec["license_terms"].get("base_model_license")}
        if terms_given is not None:
            stated: dict = {**rec["license_terms"], **{k: v for k, v in terms_given.items() if v is not None}}
        elif new["license"] is None:
            stated = {**keep, **(rec["provenance"].get("license_terms") or {})}
        else:
            stated = keep
        return rights.asset_rights(new["license"], stated, base_model=new["meta"].get("base_model"))

    def relocate_asset(self, uid: str, new_relative: str) -> dict:
        """Point an asset at the place its file was moved to by hand (the enforcer's fix).

        The file must already be at ``new_relative`` (inside the assets root) with the
        registered bytes; the sidecar is written there and the old one removed.
        """
        rel = str(safe_relative(new_relative, what="new_relative"))
        final = self._confine(rel, "new_relative")
        rec = self._require(uid)
        if not final.is_file() or sha256_file(final)[0] != rec["hash"]:
            raise AssetRegistryError(f"{rel!r} does not hold the bytes of asset {uid}; nothing changed")
        old_rel = rec["path"]
        if old_rel == rel:
            return self._public(rec)
        fired: list[tuple[str, dict]] = []
        with self.db.transaction() as conn:
            rec = self._require(uid, conn)
            self._check_path_free(conn, rel)
            new = {**rec, "path": rel, "version": rec["version"] + 1, "updated_at": time.time()}
            conn.execute("UPDATE assets SET path = ?, version = ?, updated_at = ?, search_text = ?, sidecar_pending = 1"
                         " WHERE project_id = ? AND uid = ?",
                         (rel, new["version"], new["updated_at"], self._search_text(new), self.project_id, uid))
            fired = self._emit_all(conn, [
                (self.HOOK_ASSET_META_UPDATED, self._payload(new, include_meta=True),
                 {"tags": new["tags"], "license": new["license"], "moved_from": old_rel}),
                (self.HOOK_SIDECAR_WRITTEN, self._sidecar_payload(new), None)])
        self._sync_sidecars([uid])
        old_sidecar = self.sidecar_path_for(old_rel)
        if _sidecar_uid(old_sidecar) == uid and not self._abs(old_rel).exists():
            old_sidecar.unlink(missing_ok=True)
        self._run_hooks(fired)
        return self._public(new)

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
            rec = self._require(uid, conn)
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
                                     "meta": self.meta_view(rec)}))
        self._finish_remove(rec["uid"], rec["path"], trash)
        self._drop_intents([intent])
        mirror = self.legacy_sidecar_path(rec["path"])
        if mirror is not None:
            mirror.unlink(missing_ok=True)
        self._run_hooks(fired)
        out = self._public(rec)
        out.update(trashed_to=trash, trashed=trash is not None, removed=True)
        return out

    def _trash_dir(self, uid: str, now: float) -> Path:
        return self.ws.trash_dir / self.project_id / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}_{uid}"

    def _finish_remove(self, uid: str, rel: str, trash: str | None) -> None:
        file_path, sidecar = self._abs(rel), self.sidecar_path_for(rel)
        for path in ((sidecar,) if rel.startswith(IN_PLACE_PREFIX) else (file_path, sidecar)):  # library: file stays
            if not path.exists():
                continue
            if trash:
                Path(trash).mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), str(Path(trash) / path.name))
            else:
                path.unlink(missing_ok=True)
        for thumb in self.thumbnails_root.glob(f"{uid[:2]}/{uid}_*"):
            thumb.unlink(missing_ok=True)

    # ------------------------------------------------------------------ thumbnails
    def _mark_thumbnails(self, conn, rec: dict, status: str) -> None:
        preview = rec["preview"]
        sizes = list(preview.get("thumbnails", {})) or ([WAVEFORM] if preview.get("waveform") else [])
        conn.executemany(
            "INSERT OR REPLACE INTO thumbnails(project_id, uid, size, path, status, error, updated_at)"
            " VALUES (?,?,?,?,?,NULL,?)",
            [(self.project_id, rec["uid"], s, self._thumb_rel(rec["uid"], s), status, time.time()) for s in sizes])

    def _schedule_thumbnails(self, rec: dict) -> None:
        if not self.make_thumbnails or not rec["preview"].get("kind"):
            return
        get_thumbnailer().submit(self._make_thumbnails, rec["uid"], rec["path"], rec["preview"])

    def _make_thumbnails(self, uid: str, rel: str, preview: dict) -> None:
        sizes = list(preview.get("thumbnails", {})) or [WAVEFORM]
        src = self._abs(rel)
        max_pixels = max_pixels_setting(self.ws)  # this workspace's cap, not the process's current one
        for size in sizes:
            dest = self.thumbnails_root / self._thumb_rel(uid, size)
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

    def regenerate_thumbnails(self, uid: str) -> None:
        """Make an asset's thumbnails (or waveform) again, off the caller's thread."""
        rec = self._require(uid)
        if not rec["preview"].get("kind"):
            return
        with self.db.transaction() as conn:
            self._mark_thumbnails(conn, rec, "pending")
        get_thumbnailer().submit(self._make_thumbnails, rec["uid"], rec["path"], rec["preview"])

    def thumbnail_status(self, uid: str) -> dict[str, dict]:
        """``{size: {"path", "status": pending|ready|failed, "error"}}`` for an asset."""
        rows = self.db.query("SELECT size, path, status, error FROM thumbnails WHERE project_id = ? AND uid = ?",
                             (self.project_id, uid))
        return {r["size"]: {"path": str(self.thumbnails_root / r["path"]), "status": r["status"],
                            "error": r["error"]} for r in rows}

    def resolve_thumbnail_path(self, uid: str, size: int | str = 256) -> Path | None:
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

    @staticmethod
    def wait_for_thumbnails(timeout: float | None = 30.0) -> bool:
        """Block until this process has no thumbnail pending (True) or ``timeout`` passed (False)."""
        return get_thumbnailer().wait(timeout)

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
                    if _sidecar_uid(sidecar) == intent["uid"]:
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
        if self.make_thumbnails:
            for row in stuck:
                get_thumbnailer().submit(self._make_thumbnails, row["uid"], row["path"], json.loads(row["preview"]))
            stats["thumbnails"] = len(stuck)
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
                    rec = self._decode(row)
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
                         *self._rights_columns(rec), RIGHTS_VERSION, self._search_text(rec), self.project_id,
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

    # ------------------------------------------------------------------ library roots (comfyvn.library)
    def _sidecar_str(self, rel: str) -> str:
        """:meth:`sidecar_path_for` as a string (records and hook payloads)."""
        if rel.startswith(IN_PLACE_PREFIX):
            return str(in_place_sidecar(self.ws, self.project_id, rel))
        return self._root_str + os.sep + rel + SIDECAR_SUFFIX

    def find_by_any_hash(self, value: str, *, strict: bool = False) -> dict | None:
        """The asset whose file shows ``value`` in any hash form: SHA-256, BLAKE3, CRC32, AutoV1,
        AutoV2, AutoV3, full or as the tools display them, any case, with ``blake3:`` /
        ``sha256:`` tags or A1111's brackets.  None when no asset does; text that is no hash gives
        None, or ``ValueError`` with the reason when ``strict``."""
        from ...library.aliases import candidate_sha256s

        conn = self.db.conn
        try:
            shas, query = candidate_sha256s(conn, str(value))
        except ValueError:
            if strict:
                raise
            return None
        for sha in shas:  # the uid is the digest's first 16 digits: a primary-key lookup each
            row = conn.execute("SELECT * FROM assets WHERE project_id = ? AND uid = ? AND hash = ?",
                               (self.project_id, sha[:16], sha)).fetchone()
            if row is not None:
                return self._public(self._decode(row))
        if {"autov2", "sha256_short"} & set(query.forms):  # SHA-256 prefixes: files hashed before aliases
            row = conn.execute("SELECT * FROM assets WHERE project_id = ? AND uid >= ? AND uid < ? ORDER BY uid"
                               " LIMIT 1", (self.project_id, query.value, query.value + "g")).fetchone()
            if row is not None:
                return self._public(self._decode(row))
        return None

    def register_in_place(self, items: list[dict], *, origin: str = "library") -> list[dict]:
        """Register files of library roots where they lie (one transaction): each item has
        ``rel`` (``@library/<root>/<path>``), ``asset_type``, ``sha256``, ``size`` and optionally
        ``source``, ``tags``, ``metadata``.  The files are never moved, copied or deleted; a
        content already registered returns the existing record."""
        now = time.time()
        plans: list[dict] = []
        results: list[dict | None] = [None] * len(items)
        for index, item in enumerate(items):
            if not str(item["rel"]).startswith(IN_PLACE_PREFIX):
                raise ValueError(f"{item['rel']!r} is not a library path ({IN_PLACE_PREFIX}<root>/<path>)")
            if not _TYPE_RE.match(item["asset_type"]) or not _DIGEST_RE.match(item["sha256"]):
                raise ValueError(f"bad asset type or SHA-256 for {item['rel']!r}")
            digest, rel = item["sha256"].lower(), item["rel"]
            existing = self._row(digest[:16])
            if existing is not None:
                results[index] = self._public(existing)
                continue
            prov = {"source": item.get("source") or self._abs_str(rel), "provider": origin, "digest": digest,
                    "terms_acknowledged": False, "provider_metadata": {}, "in_place": True}
            record = {
                "uid": digest[:16], "type": item["asset_type"], "path": rel, "hash": digest,
                "bytes": int(item["size"]), "tags": normalise_tags(item.get("tags")), "license": None,
                "origin": origin, "version": 1, "created_at": now, "updated_at": now,
                "meta": dict(item.get("metadata") or {}), "preview": self._preview_for(digest[:16], rel),
                "provenance": prov, "license_terms": rights.asset_rights(None, None, base_model=None)}
            record["license_known"] = rights.licence_known(None, record["license_terms"])
            self.sidecar_path_for(rel).parent.mkdir(parents=True, exist_ok=True)
            plans.append({"record": record, "intent": None, "index": index})
        fired: list[tuple[str, dict]] = []
        committed: list[dict] = []
        with self.db.transaction() as conn:
            for plan in plans:
                outcome = self._commit_one(conn, plan, None)
                if isinstance(outcome, BaseException):
                    raise outcome
                if outcome is None:  # registered a moment ago by another process
                    results[plan["index"]] = self._public(plan["clash"])
                    continue
                fired.extend(outcome)
                committed.append(plan)
        self._run_hooks(fired)
        for plan in committed:
            self._schedule_thumbnails(plan["record"])
            results[plan["index"]] = self._public(plan["record"])
        return results  # type: ignore[return-value]

    def relink_in_place(self, uid: str, new_rel: str) -> dict:
        """Point an asset at the library file its bytes now lie in (a file moved outside the
        workbench); fires ``asset_meta_updated`` with ``moved_from``.  Nothing is moved."""
        if not new_rel.startswith(IN_PLACE_PREFIX):
            raise ValueError(f"{new_rel!r} is not a library path ({IN_PLACE_PREFIX}<root>/<path>)")
        with self.db.transaction() as conn:
            rec = self._require(uid, conn)
            old_rel = rec["path"]
            if old_rel == new_rel:
                return self._public(rec)
            self._check_path_free(conn, new_rel)
            new = {**rec, "path": new_rel, "version": rec["version"] + 1, "updated_at": time.time()}
            conn.execute("UPDATE assets SET path = ?, version = ?, updated_at = ?, search_text = ?, sidecar_pending = 1"
                         " WHERE project_id = ? AND uid = ?",
                         (new_rel, new["version"], new["updated_at"], self._search_text(new), self.project_id, uid))
            fired = self._emit_all(conn, [
                (self.HOOK_ASSET_META_UPDATED, self._payload(new, include_meta=True),
                 {"tags": new["tags"], "license": new["license"], "moved_from": self._abs_str(old_rel)}),
                (self.HOOK_SIDECAR_WRITTEN, self._sidecar_payload(new), None)])
        self.sidecar_path_for(new_rel).parent.mkdir(parents=True, exist_ok=True)
        self._sync_sidecars([uid])
        old_sidecar = self.sidecar_path_for(old_rel)
        if _sidecar_uid(old_sidecar) == uid and not self._abs(old_rel).exists():
            old_sidecar.unlink(missing_ok=True)
        self._run_hooks(fired)
        return self._public(new)

    def set_preview_image(self, uid: str, image: Path) -> dict[str, dict]:
        """Make an asset's thumbnails from another image (a model's preview from its provider);
        returns :meth:`thumbnail_status`."""
        rec = self._require(uid)
        sizes = [str(s) for s in get_setting("registry.thumbnail_sizes", [256, 512], self.ws)]
        preview = {"kind": "image", "thumbnails": {s: self._thumb_rel(uid, s) for s in sizes}, "source": "provider"}
        max_pixels = max_pixels_setting(self.ws)
        done: list[tuple[str, str, str | None]] = []
        for size in sizes:
            try:
                write_preview(Path(image), self.thumbnails_root / self._thumb_rel(uid, size), size,
                              max_pixels=max_pixels)
                done.append((size, "ready", None))
            except Exception as exc:  # a broken preview is recorded, never listed as present
                done.append((size, "failed", f"{type(exc).__name__}: {exc}"))
        with self.db.transaction() as conn:
            conn.execute("UPDATE assets SET preview = ?, sidecar_pending = 1 WHERE project_id = ? AND uid = ?",
                         (json.dumps(preview), self.project_id, rec["uid"]))
            conn.executemany(
                "INSERT OR REPLACE INTO thumbnails(project_id, uid, size, path, status, error, updated_at)"
                " VALUES (?,?,?,?,?,?,?)",
                [(self.project_id, uid, s, self._thumb_rel(uid, s), st, err, time.time()) for s, st, err in done])
        self._sync_sidecars([uid])
        return self.thumbnail_status(uid)


def _sidecar_uid(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("uid") if isinstance(data, dict) else None


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
