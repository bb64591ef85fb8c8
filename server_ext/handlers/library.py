"""``/library*`` and ``/assets/by-hash/{hash}``: thin handlers over :mod:`comfyvn.library`.

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
from comfyvn.library.scan import ScanBusyError, last_scan, library_status, start_scan

from ..openapi import _PROJECT, _body, _errors, _json, _path, _ref
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
    """``GET /library``: roots with counts, and the last scan's summary."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        reg = await self.registry()

        def collect() -> dict[str, Any]:
            return {**library_status(reg), "last_scan": last_scan(reg)}

        self.reply(await self.run(collect))


class ScanHandler(LibraryBase):
    """``POST /library/scan`` ``{"roots": [...], "identify": false}``: start a scan (202)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body(["roots", "identify"], required=False)
        roots = string_list(body, "roots")
        identify = field(body, "identify", bool, False)
        reg = await self.registry()
        try:
            started = await self.run(start_scan, reg, roots or None, identify=identify)
        except ScanBusyError as exc:
            raise ApiError(409, "scan_running", str(exc)) from None
        self.reply(started, 202)


class IdentifyHandler(LibraryBase):
    """``POST /library/identify``: ask Civitai about unidentified models (100 per call) and link
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
    """``GET /library/duplicates``: byte-identical files across roots and the registry."""

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
        "parameters": [_path("hash", "A hash as a tool shows it"), _PROJECT],
        "responses": {"200": _json(_ref("Asset"), "The asset"), **_errors(400, 403, 404)}}},
    "/library": {"get": {
        "tags": ["library"], "summary": "Library roots with files, bytes, identified / unidentified / missing, "
        "and the last scan", "parameters": [_PROJECT],
        "responses": {"200": _json(_OBJ, "Roots and last scan"), **_errors(403)}}},
    "/library/scan": {"post": {
        "tags": ["library"], "summary": "Start a scan of library roots (progress: on_library_scan_* hook events)",
        "parameters": [_PROJECT],
        "requestBody": _body({"type": "object", "properties": {
            "roots": {"type": "array", "items": {"type": "string"}, "description": "names or paths; all if absent"},
            "identify": {"type": "boolean", "default": False}}}, {"roots": ["comfy"], "identify": True}),
        "responses": {"202": _json(_OBJ, "Started: scan_id, roots"), **_errors(400, 403, 409)}}},
    "/library/identify": {"post": {
        "tags": ["library"], "summary": "Identify unidentified models on Civitai in bulk and link Hugging Face repos",
        "parameters": [_PROJECT],
        "responses": {"200": _json(_OBJ, "Calls made, matches, unknown hashes"), **_errors(400, 403, 429, 502)}}},
    "/library/duplicates": {"get": {
        "tags": ["library"], "summary": "Byte-identical files across roots and the registry (nothing deleted)",
        "parameters": [_PROJECT],
        "responses": {"200": _json(_OBJ, "Groups with paths and bytes reclaimable"), **_errors(403)}}},
}
