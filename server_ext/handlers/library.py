"""``/api/library*`` and ``/assets/by-hash/{hash}``: thin handlers over :mod:`comfyvn.library`.

A scan runs in a background thread of the core (:func:`comfyvn.library.scan.start_scan`); its
progress arrives as ``on_library_scan_*`` hook events (WebSocket, history, webhooks).  Every
route takes ``?project=`` (default: ``registry.default_project``).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from comfyvn.library.duplicates import duplicate_report
from comfyvn.library.identify import identify_unidentified, link_huggingface
from comfyvn.library.scan import AUTOV3_MODES, last_scan, library_status, start_scan

from ..openapi import PROJECT_PARAM, error_responses, json_body, json_response, path_param, schema_ref
from .assets import AssetsBase
from .base import ApiError, field, string_list

AUTH_RESOURCE = "comfyvn:library"


class ByHashHandler(AssetsBase):
    """``GET /assets/by-hash/{hash}``: the asset whose file shows this hash in any form."""

    @web.authenticated
    @authorized
    async def get(self, hash: str) -> None:  # noqa: A002 - the route's parameter name
        reg = await self.existing_registry()
        rec = await self.run(reg.find_by_any_hash, hash, strict=True) if reg is not None else None
        if rec is None:
            raise ApiError(404, "asset_not_found", f"no asset shows the hash {hash[:80]!r}")
        self.reply(rec)


class LibraryBase(AssetsBase):
    auth_resource = AUTH_RESOURCE


class LibraryHandler(LibraryBase):
    """``GET /api/library``: roots with counts, and the last scan's summary."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        reg = await self.registry()

        def collect() -> dict[str, Any]:
            return {**library_status(reg), "last_scan": last_scan(reg)}

        self.reply(await self.run(collect))


class ScanHandler(LibraryBase):
    """``POST /api/library/scan`` ``{"roots": [...], "identify": false, "autov3": "background"}``: start a
    scan (202)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["roots", "identify", "autov3"], required=False)
        roots = string_list(body, "roots")
        identify = field(body, "identify", bool, False)
        autov3 = field(body, "autov3", str, "background")
        if autov3 not in AUTOV3_MODES:
            raise ApiError(400, "invalid_body", f"field 'autov3' must be one of {', '.join(AUTOV3_MODES)}")
        reg = await self.registry()
        # a scan already running: ScanBusyError, a Conflict (409 scan_running through the error table)
        self.reply(await self.run(start_scan, reg, roots or None, identify=identify, autov3=autov3), 202)


class IdentifyHandler(LibraryBase):
    """``POST /api/library/identify``: ask Civitai about unidentified models (100 per call) and link
    Hugging Face repos; answers when done."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        self.json_body([], required=False)
        reg = await self.registry()

        def work() -> dict[str, Any]:
            return {**identify_unidentified(reg).to_dict(), "huggingface": link_huggingface(reg)}

        self.reply(await self.run(work))


class DuplicatesHandler(LibraryBase):
    """``GET /api/library/duplicates``: byte-identical files across roots and the registry."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        reg = await self.registry()
        self.reply(await self.run(duplicate_report, reg))


_OBJ = {"type": "object"}
OPENAPI_OPERATIONS: dict[str, Any] = {
    "/assets/by-hash/{hash}": {"get": {
        "tags": ["assets"], "summary": "The asset whose file shows this hash: SHA-256, BLAKE3, CRC32, AutoV1, "
        "AutoV2, AutoV3 (full or as displayed, any case, blake3:/sha256: tags, A1111 [brackets])",
        "parameters": [path_param("hash", "A hash as a tool shows it"), PROJECT_PARAM],
        "responses": {"200": json_response(schema_ref("Asset"), "The asset"), **error_responses(400, 403, 404)}}},
    "/api/library": {"get": {
        "tags": ["library"], "summary": "Library roots with files, bytes, identified / unidentified / missing, "
        "and the last scan", "parameters": [PROJECT_PARAM],
        "responses": {"200": json_response(_OBJ, "Roots and last scan"), **error_responses(403)}}},
    "/api/library/scan": {"post": {
        "tags": ["library"], "summary": "Start a scan of library roots (progress: on_library_scan_* hook events)",
        "parameters": [PROJECT_PARAM],
        "requestBody": json_body({"type": "object", "properties": {
            "roots": {"type": "array", "items": {"type": "string"}, "description": "names or paths; all if absent"},
            "identify": {"type": "boolean", "default": False},
            "autov3": {"type": "string", "enum": list(AUTOV3_MODES), "default": "background",
                       "description": "AutoV3 of large .safetensors: after registration (background), in the "
                                      "first pass (eager) or left for a later scan (off)"}}},
            {"roots": ["comfy"], "identify": True}),
        "responses": {"202": json_response(_OBJ, "Started: scan_id, roots"), **error_responses(400, 403, 409)}}},
    "/api/library/identify": {"post": {
        "tags": ["library"], "summary": "Identify unidentified models on Civitai in bulk and link Hugging Face repos",
        "parameters": [PROJECT_PARAM],
        "responses": {"200": json_response(_OBJ, "Calls made, matches, unknown hashes"), **error_responses(400, 403, 429, 502)}}},
    "/api/library/duplicates": {"get": {
        "tags": ["library"], "summary": "Byte-identical files across roots and the registry (nothing deleted)",
        "parameters": [PROJECT_PARAM],
        "responses": {"200": json_response(_OBJ, "Groups with paths and bytes reclaimable"), **error_responses(403)}}},
}
