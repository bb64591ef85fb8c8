"""The original comfyvn's HTTP routes that have no twin among ours (``docs/MIGRATING.md``).

* ``POST /api/assets/register``: ``{"path", "asset_type"?, "dest_path"?, "metadata"? (object or
  JSON string), "copy"?}``, from an allowed folder only (as ``POST /assets/register``);
* ``GET /api/assets/search?q=&type=&tags=&tag=&license=&limit=&include_debug=``;
* ``GET /api/assets/{id}``;
* ``POST /assets/upload``: our streamed upload, also taking the original's multipart text fields
  ``asset_type``, ``license``, ``metadata`` (a JSON object), ``user_id`` (provenance
  ``uploaded_by``) and ``dest_path`` beside the ``file`` part; answers our record plus ``ok`` and
  ``asset`` (every upload, raw or multipart: one shape);
* ``GET /assets/debug/hooks``: our listener names plus the original's ``registry_hooks`` and
  ``modder_hooks.{events,history}``.

Answers have the original's shape, ``{"ok": true, "asset": {...}}`` (``asset_id`` too for
register), and each asset is our record (which already carries ``id``, ``thumb``, ``links``
and ``meta`` with ``tags``/``license``/``origin``/``version``/``preview``) plus the original's
``metadata`` (= ``meta``), ``preview`` (= ``meta.preview``) and ``thumbnails`` (size -> path
relative to the thumbnail root).  Deliberate difference: a created asset answers 201.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from comfyvn.core import modder_hooks
from comfyvn.hooks import get_hook_bus
from comfyvn.studio.core.asset_registry import AssetRegistry

from ..openapi import (
    PROJECT_PARAM,
    error_responses,
    json_body,
    json_response,
    path_param,
    query_param,
    schema_ref,
)
from . import assets
from .assets import ASSET_TOPICS, AssetsBase
from .base import ApiError, field, loads_strict

#: modder events listed by ``GET /assets/debug/hooks`` (the asset ones, as the original did)
ASSET_EVENTS = [name for name in modder_hooks.HOOK_SPECS if name in ASSET_TOPICS]


def original_asset(rec: dict[str, Any]) -> dict[str, Any]:
    """An asset record with the original API's keys beside ours."""
    out = dict(rec)
    meta = rec["meta"]
    out["metadata"] = meta
    out["preview"] = meta["preview"]
    out["thumbnails"] = dict(meta.get("thumbnails") or {})
    return out


def describe_callback(callback: Any) -> dict[str, Any]:
    module, qualname = getattr(callback, "__module__", None), getattr(callback, "__qualname__", None)
    return {"module": module, "qualname": qualname, "name": getattr(callback, "__name__", None),
            "repr": f"{module}:{qualname}" if module and qualname else repr(callback)}


def hooks_debug_document(reg: AssetRegistry, history_limit: int = 25) -> dict[str, Any]:
    """The ``GET /assets/debug/hooks`` answer: ours (``project``, ``hooks``: listener names)
    and the original's (``ok``, ``registry_hooks``: callback descriptors per event,
    ``modder_hooks``: ``events`` (specs) and ``history`` (asset envelopes, epoch ``timestamp``))."""
    snapshot = reg.iter_hooks()
    history = [modder_hooks.legacy_envelope(env) for env in get_hook_bus(reg.db).history(history_limit, ASSET_TOPICS)]
    return {
        "ok": True,
        "project": reg.project_id,
        "hooks": reg.describe_hooks(),
        "registry_hooks": {event: [describe_callback(cb) for cb in cbs] for event, cbs in snapshot.items()},
        "modder_hooks": {"events": asset_event_specs(), "history": history},
    }


def asset_event_specs() -> list[dict[str, Any]]:
    """The asset hook specs as the original's debug route listed them."""
    return [{"name": spec.name, "description": spec.description, "ws_topic": spec.ws_topic,
             "rest_event": spec.rest_event, "payload": dict(spec.payload_fields)}
            for spec in (modder_hooks.HOOK_SPECS[name] for name in ASSET_EVENTS)]


def _metadata(body: dict[str, Any]) -> dict[str, Any] | None:
    value = body.get("metadata")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = loads_strict(value)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, "invalid_body", f"metadata must be valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "metadata must be a JSON object (or a string holding one)")
    return value


class CompatBase(AssetsBase):
    async def read_registry(self) -> AssetRegistry | None:
        """The registry for a read route: ``None`` for a project never written to where the
        server creates nothing on reads (``existing_registry``), else the project's registry."""
        existing = getattr(AssetsBase, "existing_registry", None)
        return await (existing(self) if existing is not None else self.registry())


class RegisterHandler(CompatBase):
    """``POST /api/assets/register``: the original's register call (201 when created, 200 for a duplicate)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["path", "asset_type", "dest_path", "metadata", "copy"])
        source = field(body, "path", str)
        asset_type = field(body, "asset_type", str, "generic", nullable=True) or "generic"
        dest = field(body, "dest_path", str, None, nullable=True)
        copy = field(body, "copy", bool, True)
        metadata = _metadata(body)
        project = self.q_str("project", max_len=64)
        services = self.services

        def register() -> tuple[dict[str, Any], bool]:
            if not Path(os.path.expanduser(source)).is_absolute():
                raise ApiError(400, "invalid_body", f"path {source!r} must be an absolute path on the server")
            path = services.queue().check_source(source)  # inside ingest.allowed_source_roots
            reg = services.registry(project)
            started = time.time()
            rec = reg.register_file(path, asset_type, dest_relative=dest, metadata=metadata, copy=copy)
            return rec, rec["created_at"] >= started

        rec, created = await self.run(register)
        self.reply({"ok": True, "asset_id": rec["uid"], "asset": original_asset(rec)}, 201 if created else 200)


class SearchHandler(CompatBase):
    """``GET /api/assets/search``: ``q`` (text over path, tags, licence and metadata), ``type``,
    ``tags``/``tag`` (all required, case-insensitive), ``license``, ``limit`` (default 200)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        tags = (self.q_list("tags") or []) + (self.q_list("tag") or [])
        filters = {"asset_type": self.q_str("type", max_len=64), "tags": tags or None,
                   "license": self.q_str("license", max_len=128), "text": self.q_str("q", max_len=256)}
        limit = self.q_int("limit", None, minimum=1, maximum=1000)
        reg = await self.read_registry()
        page: dict[str, Any] = (await self.run(reg.query_assets, **filters, limit=limit or 200, with_total=True)
                                if reg is not None else {"items": [], "total": 0})
        answer: dict[str, Any] = {
            "ok": True, "total": page["total"], "items": [original_asset(r) for r in page["items"]],
            "filters": {"type": filters["asset_type"], "tags": tags, "license": filters["license"],
                        "q": filters["text"], "limit": limit},
            "debug": None,
        }
        if self.q_bool("include_debug") and reg is not None:
            answer["debug"] = {"hooks": {e: [repr(cb) for cb in cbs] for e, cbs in reg.iter_hooks().items()},
                               "assets_root": str(reg.ASSETS_ROOT), "thumb_root": str(reg.THUMB_ROOT),
                               "project_id": reg.project_id}
        self.reply(answer)


class AssetHandler(CompatBase):
    """``GET /api/assets/{id}``."""

    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        reg = await self.read_registry()
        if reg is None:
            raise ApiError(404, "asset_not_found", f"no asset {uid!r} (no such project)")
        rec = await self.require(reg, uid)
        self.reply({"ok": True, "asset": original_asset(rec)})


class UploadHandler(assets.UploadHandler):
    """``POST /assets/upload``: ours (query parameters) plus the original's multipart text fields.

    A field given both as a query parameter and as a form field must agree (400 otherwise)."""

    form_fields = frozenset({"asset_type", "license", "metadata", "user_id", "dest_path"})

    def _from_form(self, name: str, query_value: Any) -> Any:
        value: Any = self.form.get(name)
        if value is None or value == "":
            return query_value
        if name == "metadata":
            value = _metadata({"metadata": value})
        if query_value is not None and query_value != value:
            raise ApiError(400, "invalid_body", f"{name} is given as a query parameter and as a form field, "
                                                f"with different values ({query_value!r} and {value!r})")
        return value

    @web.authenticated
    @authorized
    async def post(self) -> None:
        opts = self.upload_options
        try:
            path = await self.finish_upload()
            asset_type = self._from_form("asset_type", self.q_str("asset_type", max_len=64))
            if not asset_type:
                asset_type = self.asset_type()  # images/audio from the file name, else 400
            elif len(asset_type) > 64:
                raise ApiError(400, "invalid_body", "asset_type is longer than 64 characters")
            license_tag = self._from_form("license", opts["license_tag"])
            metadata = self._from_form("metadata", opts["metadata"])
            dest = self._from_form("dest_path", opts["dest_relative"])
            user = self.form.get("user_id") or getattr(self.current_user, "username", None)
            reg = await self.registry()
            started = time.time()
            rec = await self.run(reg.register_file, path, asset_type, dest_relative=dest, metadata=metadata,
                                 copy=False, license_tag=license_tag, tags=opts["tags"], origin="upload",
                                 digest=self.upload_digest,
                                 provenance={"source": f"upload:{self.filename}", "uploaded_by": user})
        finally:
            await self.discard_upload()  # moved into the assets root, or a duplicate: drop the rest
        self.reply({**rec, "ok": True, "asset": original_asset(rec)}, 201 if rec["created_at"] >= started else 200)


class DebugHooksHandler(CompatBase):
    """``GET /assets/debug/hooks``: see :func:`hooks_debug_document` (``?limit=`` history entries)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        limit = self.q_int("limit", 25, minimum=1, maximum=200)
        reg = await self.read_registry()
        if reg is None:  # a project nobody wrote to: nothing attached, nothing happened
            self.reply({"ok": True, "project": self.q_str("project", max_len=64), "hooks": {}, "registry_hooks": {},
                        "modder_hooks": {"events": asset_event_specs(), "history": []}})
            return
        self.reply(await self.run(hooks_debug_document, reg, limit))


_OK_ASSET = {"type": "object", "properties": {"ok": {"type": "boolean"}, "asset_id": {"type": "string"},
                                              "asset": schema_ref("Asset")}}
#: the OpenAPI operations of these routes (``server_ext/openapi.py`` merges them into ``OPERATIONS``)
OPENAPI_OPERATIONS: dict[str, Any] = {
    "/api/assets/register": {"post": {
        "tags": ["compat"], "summary": "The original's register call: a file already on the server (allowed folders)",
        "parameters": [PROJECT_PARAM],
        "requestBody": json_body({"type": "object", "required": ["path"], "properties": {
            "path": {"type": "string"}, "asset_type": {"type": "string", "default": "generic"},
            "dest_path": {"type": ["string", "null"]}, "metadata": {"type": ["object", "string", "null"]},
            "copy": {"type": "boolean"}}}, {"path": "/data/in/hero.png", "asset_type": "images",
                                            "metadata": {"tags": ["hero"], "license": "cc0"}}),
        "responses": {"201": json_response(_OK_ASSET, "Registered"), "200": json_response(_OK_ASSET, "Already registered (merged)"),
                      **error_responses(400, 403, 409)}}},
    "/api/assets/search": {"get": {
        "tags": ["compat"], "summary": "The original's search: q over path, tags, licence and metadata",
        "parameters": [query_param("q", "Text"), query_param("type", "Asset type"), query_param("tags", "Tags, all required (csv/repeat)"),
                       query_param("tag", "Same as tags"), query_param("license", "Licence"), query_param("limit", "1..1000 (200)", "integer"),
                       query_param("include_debug", "Add registry hook details", "boolean"), PROJECT_PARAM],
        "responses": {"200": json_response({"type": "object", "properties": {
            "ok": {"type": "boolean"}, "total": {"type": "integer"},
            "items": {"type": "array", "items": schema_ref("Asset")}, "filters": {"type": "object"},
            "debug": {"type": ["object", "null"]}}}, "Matching assets"), **error_responses(400, 403)}}},
    "/api/assets/{uid}": {"get": {
        "tags": ["compat"], "summary": "One asset in the original's envelope",
        "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM],
        "responses": {"200": json_response(_OK_ASSET, "The asset"), **error_responses(403, 404)}}},
    "/assets/debug/hooks": {"get": {
        "tags": ["assets"], "summary": "In-process registry listeners, asset hook specs and recent asset events",
        "parameters": [PROJECT_PARAM, query_param("limit", "History entries, 1..200 (25)", "integer")],
        "responses": {"200": json_response({"type": "object", "properties": {
            "ok": {"type": "boolean"}, "project": {"type": "string"},
            "hooks": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            "registry_hooks": {"type": "object"},
            "modder_hooks": {"type": "object", "properties": {"events": {"type": "array"},
                                                               "history": {"type": "array"}}}}},
            "Listeners, specs and history"), **error_responses(400, 403)}}},
}
