"""``/assets/*``: thin handlers over :class:`comfyvn.studio.core.asset_registry.AssetRegistry`.

Every route takes ``?project=`` (default: ``registry.default_project``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import quote

from jupyter_server.auth.decorator import authorized
from tornado import iostream, web
from tornado.http1connection import HTTP1Connection

from comfyvn import rights
from comfyvn.config import get_setting
from comfyvn.confined import open_confined
from comfyvn.hooks.specs import topics
from comfyvn.kinds import KIND_TYPES, file_kind
from comfyvn.registry.records import TEXT_MAX
from comfyvn.store import Database, StoreUnavailable
from comfyvn.store.base import ChangeWatcher
from comfyvn.studio.core.asset_registry import SORT_COLUMNS, AssetRegistry, decode_cursor
from comfyvn.studio.core.thumbnails import WAVEFORM

from .base import ApiError, ComfyvnAPIHandler, field, string_list
from .uploads import StreamedUploadMixin

log = logging.getLogger("comfyvn.server")
AUTH_RESOURCE = "comfyvn:assets"
CHUNK = 256 * 1024
ASSET_TOPICS = topics("asset")
T = TypeVar("T")


class AssetsBase(ComfyvnAPIHandler):
    auth_resource = AUTH_RESOURCE

    async def registry(self) -> AssetRegistry:
        """The project's registry, created on first use (write routes)."""
        return await self.run(self.services.registry, self.q_str("project", max_len=64))

    async def existing_registry(self) -> AssetRegistry | None:
        """The project's registry, or None for a project never written to (read routes create nothing)."""
        return await self.run(self.services.existing_registry, self.q_str("project", max_len=64))

    async def require_asset(self, uid: str) -> tuple[AssetRegistry, dict[str, Any]]:
        """The registry and record of an existing asset (404 otherwise, creating nothing)."""
        reg = await self.existing_registry()
        if reg is None:
            project = self.q_str("project", max_len=64) or self.services.default_project
            raise ApiError(404, "asset_not_found", f"no asset {uid!r} in project {project!r} (no such project)")
        return reg, await self.require(reg, uid)

    async def require(self, reg: AssetRegistry, uid: str) -> dict[str, Any]:
        rec = await self.run(reg.get_asset, uid)
        if rec is None:
            raise ApiError(404, "asset_not_found", f"no asset {uid!r} in project {reg.project_id!r}")
        return rec

    async def open_file(self, root: Path, rel: str, what: str) -> tuple[BinaryIO, os.stat_result]:
        """Open a workspace file for a response through the one confined reader.

        A symlink anywhere below ``root`` or a non-regular file is refused with 403
        ``file_refused``; a missing file is 404 ``file_missing``."""
        try:
            return await self.run(open_confined, root, rel, what=what)
        except ApiError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                raise ApiError(404, "file_missing", f"{exc.__cause__.strerror}; run the sidecar enforcer to "
                                                    "audit the registry") from None
            raise

    async def stream_file(self, fh: BinaryIO, st: os.stat_result, content_type: str, *,
                          download_name: str | None = None, etag: str | None = None) -> None:
        """Send an open file (from :meth:`open_file`) in chunks, each read in the worker pool."""
        try:
            if etag:
                self.set_header("ETag", f'"{etag}"')
                if self.request.headers.get("If-None-Match", "").strip('"') == etag:
                    self.set_status(304)
                    self.finish(set_content_type=content_type)
                    return
            remaining = st.st_size
            self.set_header("Content-Type", content_type)
            self.set_header("Content-Length", str(remaining))
            self.set_header("X-Content-Type-Options", "nosniff")
            if download_name:
                fallback = download_name.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
                self.set_header("Content-Disposition",
                                f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(download_name)}")
            while remaining > 0:
                chunk = await self.run(fh.read, min(CHUNK, remaining))
                if not chunk:  # truncated while sent: the promised length cannot be kept
                    log.warning("comfyvn: %s shrank while it was sent; closing the connection", fh.name)
                    cast(HTTP1Connection, self.request.connection).close()  # Tornado's HTTP/1 server
                    return
                remaining -= len(chunk)
                self.write(chunk)
                await self.flush()
        except iostream.StreamClosedError:
            return
        finally:
            self.services.executor.submit(fh.close)
        self.finish(set_content_type=content_type)


class AssetsHandler(AssetsBase):
    """``GET /assets``: one page of assets with filters and a keyset cursor."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        sort = self.q_str("sort", "created_at", max_len=32)
        if sort not in SORT_COLUMNS:
            raise ApiError(400, "invalid_parameter", f"sort must be one of {', '.join(SORT_COLUMNS)}, got {sort!r}")
        order = self.q_str("order", "desc", max_len=8)
        if order not in ("asc", "desc"):
            raise ApiError(400, "invalid_parameter", f"order must be asc or desc, got {order!r}")
        tags_mode = self.q_str("tags_mode", "all", max_len=8)
        if tags_mode not in ("all", "any"):
            raise ApiError(400, "invalid_parameter", f"tags_mode must be all or any, got {tags_mode!r}")
        filters = {
            "asset_type": self.q_str("type", max_len=64), "tags": self.q_list("tags"), "tags_mode": tags_mode,
            "license": self.q_str("license", max_len=128), "text": self.q_str("text", max_len=TEXT_MAX),
            "hash": self.q_str("hash", max_len=64), "limit": self.q_int("limit", 50, minimum=1, maximum=1000),
            "cursor": asset_cursor(self.q_str("cursor", max_len=512)), "sort": sort, "descending": order == "desc",
            "with_total": self.q_bool("total"),
            **self.rights_filters(),
        }
        project = self.q_str("project", max_len=64)
        services = self.services

        def key(project_id: str) -> tuple:
            return ("assets", project_id, *((k, tuple(v) if isinstance(v, list) else v) for k, v in filters.items()))

        # a page kept since the last commit is answered here, on the loop, without a trip to the pool
        try:
            name = project or services.workbench.default_project  # the registry's project_id (same check)
        except Exception:  # a broken config: the pool path answers it
            name = None
        kept = page_cache(services.db).current(key(name)) if name else None
        if kept is not None:
            body, self._etag = kept
            self.finish(body)
            return

        def page_json() -> tuple[bytes, str]:  # one trip to the worker pool: registry, page (or its cached JSON)
            reg = services.existing_registry(project)
            if reg is None:  # a project nobody wrote to: empty, and nothing is created for the read
                page: dict[str, Any] = {"items": [], "next_cursor": None}
                if filters["with_total"]:
                    page["total"] = 0
                page["project"] = project
                return with_etag(json_bytes(page))

            def fresh() -> tuple[bytes, str]:
                page = reg.query_assets(**filters)
                page["project"] = reg.project_id
                return with_etag(json_bytes(page))

            return page_cache(reg.db).get(key(reg.project_id), fresh, size=lambda answer: len(answer[0]))

        body, self._etag = await self.run(page_json)
        self.finish(body)

    _etag: str | None = None

    def compute_etag(self) -> str | None:
        """The page's ETag, made with the page (a cached page is not hashed again for every request)."""
        return self._etag if self._etag is not None else super().compute_etag()

    def rights_filters(self) -> dict[str, Any]:
        """``?commercial_use=`` (a level: at least it), ``?credit_required=``, ``?derivatives=`` and
        ``?license_known=`` (true/false); absent ones filter nothing, a bad value is a 400."""
        level = self.q_str("commercial_use", max_len=16)
        if level is not None and level not in rights.COMMERCIAL_LEVELS:
            raise ApiError(400, "invalid_parameter",
                           f"commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)}, got {level!r}")
        out: dict[str, Any] = {"commercial_use": level}
        for name in ("credit_required", "derivatives", "license_known"):
            out[name] = None if self.q_str(name, max_len=8) is None else self.q_bool(name)
        return out


def json_bytes(payload: Any) -> bytes:
    """The JSON of a reply, as :meth:`ComfyvnAPIHandler.reply` writes it."""
    return json.dumps(payload, default=str, ensure_ascii=False).encode("utf-8")


def with_etag(body: bytes) -> tuple[bytes, str]:
    """A reply body and the ETag Tornado gives it (``compute_etag``: the SHA-1 of the body)."""
    return body, f'"{hashlib.sha1(body).hexdigest()}"'


class PageCache:
    """Recent answers made from one database (``GET /assets`` pages, the ingest status), kept while it is unchanged.

    Valid means: the store's change marker (:class:`~comfyvn.store.base.ChangeWatcher`: SQLite's
    ``PRAGMA data_version``, PostgreSQL's ``pg_current_snapshot()``) is what it was when the answer
    was made.  It changes whenever any connection (another thread, another process) commits, so an
    answer is never older than the last commit; the
    version is read *before* the query, so a commit racing the query only makes the next request
    query again.  Bounded: at most :attr:`MAX_PAGES` answers and :attr:`MAX_BYTES` in all (``size``
    of each), least recently used dropped first.  Any SQLite error disables it for that request (a
    plain query).  Keys name their route (one cache serves every route of the database).
    """

    MAX_PAGES = 64
    MAX_BYTES = 8 * 1024 * 1024

    def __init__(self, db: Database) -> None:
        self.db = db
        self._watcher = ChangeWatcher(db, wait=False)  # the event loop reads it too (current)
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple, tuple[int | str, Any, int]] = OrderedDict()
        self._bytes = 0

    def version(self) -> int | str | None:
        try:
            return self._watcher.marker()
        except (sqlite3.Error, StoreUnavailable):
            return None

    def current(self, key: tuple) -> Any | None:
        """The kept answer of ``key`` if the database has not changed since it was made, found
        without waiting for anything (for the event loop: SQLite's marker on a connection that
        never waits for a lock); None otherwise (PostgreSQL, not kept, changed, or the marker not
        readable at once): then ask :meth:`get` in the worker pool."""
        version = self._watcher.marker_now()
        if version is None:
            return None
        with self._lock:
            hit = self._pages.get(key)
            if hit is None or hit[0] != version:
                return None
            self._pages.move_to_end(key)
            return hit[1]

    def get(self, key: tuple, make: Callable[[], T], size: Callable[[Any], int] = len) -> T:
        """The cached answer of ``key`` if the database has not changed since, else ``make()`` (kept).
        Answers are shared between threads: nobody may change one."""
        version = self.version()
        if version is None:
            return make()
        with self._lock:
            hit = self._pages.get(key)
            if hit is not None and hit[0] == version:
                self._pages.move_to_end(key)
                return hit[1]
        answer = make()
        n = size(answer)
        with self._lock:
            old = self._pages.pop(key, None)
            self._bytes -= old[2] if old else 0
            if n <= self.MAX_BYTES // 4:
                self._pages[key] = (version, answer, n)
                self._bytes += n
            while self._pages and (len(self._pages) > self.MAX_PAGES or self._bytes > self.MAX_BYTES):
                self._bytes -= self._pages.popitem(last=False)[1][2]
        return answer


_page_caches: weakref.WeakKeyDictionary[Database, PageCache] = weakref.WeakKeyDictionary()
_page_caches_lock = threading.Lock()


def page_cache(db: Database) -> PageCache:
    """The :class:`PageCache` of a database (made on first use)."""
    with _page_caches_lock:
        cache = _page_caches.get(db)
        if cache is None:
            cache = _page_caches[db] = PageCache(db)
        return cache


def asset_cursor(cursor: str | None) -> str | None:
    """400 unless ``cursor`` is one the asset list handed out."""
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise ApiError(400, "invalid_parameter", str(exc)) from None
    return cursor


class AssetHandler(AssetsBase):
    """``GET`` one asset, ``PATCH`` its metadata/tags/licence, ``DELETE`` it (to the trash by default)."""

    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        reg, rec = await self.require_asset(uid)
        rec["thumbnails"] = await self.run(reg.thumbnail_status, uid)
        self.reply(rec)

    @web.authenticated
    @authorized
    async def patch(self, uid: str) -> None:
        body = self.json_body(["metadata", "replace", "add_tags", "remove_tags", "license", "expected_version"])
        kwargs: dict[str, Any] = {
            "replace": field(body, "replace", bool, False),
            "add_tags": string_list(body, "add_tags"), "remove_tags": string_list(body, "remove_tags"),
            "expected_version": field(body, "expected_version", int, None, nullable=True),
        }
        metadata = field(body, "metadata", dict, None, nullable=True)
        if "license" in body:  # null clears the licence; absent leaves it
            kwargs["license_tag"] = field(body, "license", str, nullable=True)
        if metadata is None and not any(body.get(k) for k in ("add_tags", "remove_tags")) and "license" not in body:
            raise ApiError(400, "invalid_body", "nothing to update: give metadata, add_tags, remove_tags or license")
        reg, _ = await self.require_asset(uid)
        self.reply(await self.run(reg.update_asset_meta, uid, metadata, **kwargs))

    @web.authenticated
    @authorized
    async def delete(self, uid: str) -> None:
        delete_files = self.q_bool("delete_files")
        reg, _ = await self.require_asset(uid)
        self.reply(await self.run(reg.remove_asset_record, uid, delete_files=delete_files))


class SidecarHandler(AssetsBase):
    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        reg, rec = await self.require_asset(uid)
        sidecar = await self.run(reg.read_sidecar, uid)  # confined; missing or corrupt -> 409 asset_conflict
        self.reply({"uid": uid, "path": rec["sidecar"], "sidecar": sidecar})


class ThumbnailHandler(AssetsBase):
    """``?size=256`` (a configured size) or ``?size=waveform`` (JSON peaks of a WAV file)."""

    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        size = self.q_str("size", "256", max_len=16)
        sizes = [str(s) for s in get_setting("registry.thumbnail_sizes", [256, 512], self.services.ws)] + [WAVEFORM]
        if size not in sizes:
            raise ApiError(400, "invalid_parameter", f"size must be one of {', '.join(sizes)}, got {size!r}")
        reg, _ = await self.require_asset(uid)
        state = (await self.run(reg.thumbnail_status, uid)).get(size)
        if state is None:
            raise ApiError(404, "no_thumbnail", f"asset {uid} has no {size} preview (not an image/WAV file)")
        if state["status"] == "pending":
            raise ApiError(503, "thumbnail_pending", f"the {size} thumbnail of {uid} is being made; retry shortly",
                           {"Retry-After": "1"})
        if state["status"] != "ready":
            raise ApiError(404, "thumbnail_failed", f"the {size} thumbnail of {uid} failed: {state['error']}")
        rel = os.path.relpath(state["path"], reg.thumbnails_root)
        fh, st = await self.open_file(reg.thumbnails_root, rel, "thumbnail")
        await self.stream_file(fh, st, "application/json" if size == WAVEFORM else "image/png",
                               etag=f"{uid}-{size}-{st.st_mtime_ns}")


class DownloadHandler(AssetsBase):
    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        reg, rec = await self.require_asset(uid)
        # never through a symlink, never a FIFO or device (tests/reliability/test_security_routes.py)
        # the assets root, or the library root of a file registered in place
        fh, st = await self.open_file(*reg.file_location(rec["path"]), "asset file")
        name = Path(rec["path"]).name
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        await self.stream_file(fh, st, mime, download_name=name, etag=rec["hash"])


class UploadHandler(StreamedUploadMixin, AssetsBase):
    """``POST /assets/upload?filename=...&asset_type=...``: the body is the file; registered at once."""

    def validate_upload_params(self) -> None:
        self.upload_options = {
            "asset_type": self.asset_type() if self.filename else None, "dest_relative": self.q_str("dest_relative"),
            "metadata": self.q_json_object("metadata"), "tags": self.q_list("tags"),
            "license_tag": self.q_str("license", max_len=128),
        }

    def asset_type(self) -> str:
        """``?asset_type=``, else images/audio/models from the file name's kind (:mod:`comfyvn.kinds`,
        the rule ingest and the enforcer use); 400 for a file of no known kind."""
        kind = file_kind(self.filename or "")
        asset_type = self.q_str("asset_type", max_len=64) or (KIND_TYPES[kind] if kind else None)
        if not asset_type:
            raise ApiError(400, "invalid_parameter", f"asset_type is required for {self.filename!r} "
                                                     "(e.g. ?asset_type=models)")
        return asset_type

    @web.authenticated
    @authorized
    async def post(self) -> None:
        opts = self.upload_options
        user = getattr(self.current_user, "username", None)
        try:
            path = await self.finish_upload()
            asset_type = opts["asset_type"] or self.asset_type()  # a multipart part named the file
            reg = await self.registry()
            started = time.time()
            rec = await self.run(reg.register_file, path, asset_type, dest_relative=opts["dest_relative"],
                                 metadata=opts["metadata"], copy=False, license_tag=opts["license_tag"],
                                 tags=opts["tags"], origin="upload", digest=self.upload_digest,
                                 provenance={"source": f"upload:{self.filename}", "uploaded_by": user})
        finally:
            await self.discard_upload()  # moved into the assets root, or a duplicate: drop the rest
        self.reply(rec, 201 if rec["created_at"] >= started else 200)


class RegisterHandler(AssetsBase):
    """``POST /assets/register``: a file already on the server, from an allowed folder only."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["path", "asset_type", "dest_relative", "metadata", "tags", "license", "copy"])
        source = field(body, "path", str)
        asset_type = field(body, "asset_type", str)
        kwargs = {
            "dest_relative": field(body, "dest_relative", str, None, nullable=True),
            "metadata": field(body, "metadata", dict, None, nullable=True),
            "tags": string_list(body, "tags"),
            "license_tag": field(body, "license", str, None, nullable=True),
            "copy": field(body, "copy", bool, True),
        }
        services = self.services

        def register() -> tuple[dict[str, Any], bool]:
            if not Path(os.path.expanduser(source)).is_absolute():
                raise ApiError(400, "invalid_body", f"path {source!r} must be an absolute path on the server")
            # the same check as ingest: resolved (symlinks followed) inside ingest.allowed_source_roots
            path = services.queue().check_source(source)
            reg = services.registry(project)
            started = time.time()
            rec = reg.register_file(path, asset_type, **kwargs)
            return rec, rec["created_at"] >= started

        project = self.q_str("project", max_len=64)
        rec, created = await self.run(register)
        self.reply(rec, 201 if created else 200)


class BulkHandler(AssetsBase):
    """``POST /assets/bulk``: add/remove tags and set/clear the licence of many assets at once."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["uids", "add_tags", "remove_tags", "license"])
        uids = string_list(body, "uids")
        if not uids:
            raise ApiError(400, "invalid_body", "field 'uids' must list at least one asset uid")
        kwargs: dict[str, Any] = {"add_tags": string_list(body, "add_tags"),
                                  "remove_tags": string_list(body, "remove_tags")}
        if "license" in body:
            kwargs["license_tag"] = field(body, "license", str, nullable=True)
        if not kwargs["add_tags"] and not kwargs["remove_tags"] and "license" not in body:
            raise ApiError(400, "invalid_body", "nothing to update: give add_tags, remove_tags or license")
        reg = await self.registry()
        items = await self.run(reg.bulk_update_tags, uids, **kwargs)
        self.reply({"items": items, "count": len(items)})


class DebugHooksHandler(AssetsBase):
    """In-process registry listeners of this server (``add_hook`` callbacks)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        reg = await self.existing_registry()
        if reg is None:
            self.reply({"project": self.q_str("project", max_len=64), "hooks": {}})
            return
        self.reply({"project": reg.project_id, "hooks": reg.describe_hooks()})


class DebugModderHooksHandler(AssetsBase):
    """The asset hook specs of the modder bus, with their payload fields."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply({"hooks": self.services.bus.specs("asset")})


class DebugHistoryHandler(AssetsBase):
    """The newest asset envelopes (read by topic, so busy ingest events never push them out)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.q_int("limit", 25, minimum=1, maximum=1000)
        # byte-bounded like /api/modder/hooks/history, and its JSON made in the worker pool
        page = await self.run(self.services.bus.history_page, limit, ASSET_TOPICS)
        self.set_header("Content-Type", "application/json")
        self.finish(f'{{"items":{page["json"]}}}')
