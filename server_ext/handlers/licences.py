"""``/api/licences/*``: thin handlers over :mod:`comfyvn.licences` (auth resource ``comfyvn:licences``).

* ``GET /api/licences/check?project=&use=``: every asset's verdict, reasons and duties;
* ``GET /api/licences/manifest?project=&use=&format=md|json|csv|html``: the credits file;
* ``GET /api/licences/overrides/{uid}?project=``: the asset's decision in force and its paper trail;
* ``POST /api/licences/overrides/{uid}?project=``: record a decision (who: the Jupyter user);
* ``DELETE /api/licences/overrides/{uid}?project=&note=``: withdraw it (recorded too).

Every route reads an existing project only (404 ``project_not_found`` otherwise) and runs its
work in the extension's thread pool.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from comfyvn.licences.check import VERDICTS, check_project
from comfyvn.licences.manifest import MANIFEST_FORMATS, MEDIA_TYPES, render_manifest
from comfyvn.licences.overrides import (
    clear_override,
    current_overrides,
    override_history,
    set_override,
)
from comfyvn.studio.core.asset_registry import AssetRegistry

from .base import ApiError, ComfyvnAPIHandler, field

AUTH_RESOURCE = "comfyvn:licences"


class LicencesBase(ComfyvnAPIHandler):
    auth_resource = AUTH_RESOURCE

    async def project(self) -> AssetRegistry:
        """The registry of an existing project (404 for a project nobody wrote to; nothing is created)."""
        name = self.q_str("project", max_len=64)
        reg = await self.run(self.services.existing_registry, name)
        if reg is None:
            raise ApiError(404, "project_not_found", f"no project {name or self.services.default_project!r}")
        return reg

    def who(self) -> str:
        user = self.current_user
        return str(getattr(user, "username", None) or getattr(user, "name", None) or "anonymous")


class CheckHandler(LicencesBase):
    """``GET /api/licences/check``: counts and ``ok`` of the whole project; the assets one page at a
    time (``verdict`` filter, ``limit`` 1..10000 default 1000, ``offset``), so a reply stays bounded."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        verdicts = self.q_list("verdict")
        unknown = sorted(set(verdicts or []) - set(VERDICTS))
        if unknown:
            raise ApiError(400, "invalid_parameter", f"verdict must be among {', '.join(VERDICTS)}, got "
                                                     f"{', '.join(unknown)}")
        limit = self.q_int("limit", 1000, minimum=1, maximum=10_000) or 1000
        offset = self.q_int("offset", 0, minimum=0, maximum=2**62) or 0
        reg = await self.project()
        use = self.q_str("use", max_len=64)

        def page() -> dict[str, Any]:
            result = check_project(reg, use)
            matching = [a for a in result["assets"] if not verdicts or a["verdict"] in verdicts]
            end = offset + limit
            return {**result, "assets": matching[offset:end], "total": len(matching),
                    "next_offset": end if end < len(matching) else None}
        self.reply(await self.run(page))


class ManifestHandler(LicencesBase):
    """``GET /api/licences/manifest``: served as a download (never rendered on the server's origin)."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        fmt = self.q_str("format", "md", max_len=8)
        if fmt not in MANIFEST_FORMATS:
            raise ApiError(400, "invalid_parameter", f"format must be one of {', '.join(MANIFEST_FORMATS)}, got {fmt!r}")
        reg = await self.project()
        use = self.q_str("use", max_len=64)
        text = await self.run(lambda: render_manifest(check_project(reg, use), fmt))
        self.set_header("X-Content-Type-Options", "nosniff")
        if fmt != "json":
            self.set_header("Content-Disposition", f'attachment; filename="licences-{reg.project_id}.{fmt}"')
        self.finish(text, set_content_type=MEDIA_TYPES[fmt])  # APIHandler.finish sets the type itself


class OverrideHandler(LicencesBase):
    """``GET/POST/DELETE /api/licences/overrides/{uid}``."""

    async def _asset(self, uid: str) -> AssetRegistry:
        reg = await self.project()
        if await self.run(reg.get_asset, uid) is None:
            raise ApiError(404, "asset_not_found", f"no asset {uid!r} in project {reg.project_id!r}")
        return reg

    @web.authenticated
    @authorized
    async def get(self, uid: str) -> None:
        reg = await self._asset(uid)

        def read() -> dict[str, Any]:
            return {"uid": uid, "project": reg.project_id,
                    "override": current_overrides(reg.db, reg.project_id).get(uid),
                    "history": override_history(reg.db, reg.project_id, uid)}
        self.reply(await self.run(read))

    @web.authenticated
    @authorized
    async def post(self, uid: str) -> None:
        body = self.json_body(("license", "terms", "note", "covers_sources"))
        reg = await self._asset(uid)
        rec = await self.run(set_override, reg, uid, license=field(body, "license", str, None, nullable=True),
                             terms=field(body, "terms", dict, None, nullable=True), note=field(body, "note", str),
                             covers_sources=field(body, "covers_sources", bool, False), decided_by=self.who())
        self.reply(rec, 201)

    @web.authenticated
    @authorized
    async def delete(self, uid: str) -> None:
        note = self.q_str("note", max_len=2000)
        if note is None:
            raise ApiError(400, "invalid_parameter", "note is required: say why the decision is withdrawn")
        reg = await self._asset(uid)
        self.reply(await self.run(clear_override, reg, uid, note=note, decided_by=self.who()))


# ------------------------------------------------------------------ OpenAPI (merged by ..openapi)
_JSON = "application/json"


def _q(name: str, description: str, **schema: Any) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


def _ok(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {_JSON: {"schema": schema or {"type": "object"}}}}


def _err(*codes: int) -> dict:
    return {str(c): {"$ref": "#/components/responses/Error"} if c == 403 else
            _ok({400: "Invalid input", 404: "No such project, asset or override"}[c],
                {"$ref": "#/components/schemas/Error"}) for c in codes}


_PROJECT = _q("project", "Registry project (default: registry.default_project); must exist")
_USE = _q("use", "Use profile (default: licences.default_use; shipped: commercial, free-release, internal, rent)")
_UID = {"name": "uid", "in": "path", "required": True, "description": "Asset uid", "schema": {"type": "string"}}
_CHECK = {"type": "object", "properties": {k: {} for k in ("project", "use", "profile", "counts", "ok", "assets",
                                                           "total", "next_offset")}}
_OVERRIDE = {"type": "object", "properties": {k: {} for k in (
    "id", "uid", "project_id", "action", "license", "terms", "covers_sources", "note", "decided_by", "decided_at",
    "decided_at_utc")}}

OPENAPI_OPERATIONS: dict[str, Any] = {
    "/api/licences/check": {"get": {
        "tags": ["licences"], "summary": "Verdict of every asset for a use profile (allowed, allowed_with_duties, "
                                         "blocked, unknown) with reasons, sources and duties",
        "parameters": [_PROJECT, _USE, _q("verdict", "Only these verdicts (comma-separated)"),
                       {**_q("limit", "Assets per page (1..10000, default 1000)"), "schema": {"type": "integer"}},
                       {**_q("offset", "First asset of the page (next_offset of the previous one)"),
                        "schema": {"type": "integer"}}],
        "responses": {"200": _ok("Counts and ok of the whole project (ok is false when anything is blocked or "
                                 "unknown); one page of assets", _CHECK), **_err(400, 403, 404)}}},
    "/api/licences/manifest": {"get": {
        "tags": ["licences"], "summary": "The credits and notices file (deterministic), as a download",
        "parameters": [_PROJECT, _USE, _q("format", "md | json | csv | html", enum=list(MANIFEST_FORMATS))],
        "responses": {"200": {"description": "The manifest", "content": {
            MEDIA_TYPES[f].split(";")[0]: {"schema": {"type": "string" if f != "json" else "object"}}
            for f in MANIFEST_FORMATS}}, **_err(400, 403, 404)}}},
    "/api/licences/overrides/{uid}": {
        "get": {"tags": ["licences"], "summary": "The asset's licence decision in force and its paper trail",
                "parameters": [_UID, _PROJECT],
                "responses": {"200": _ok("Override and history"), **_err(403, 404)}},
        "post": {"tags": ["licences"], "summary": "Record a licence decision (who: the Jupyter user; when: now)",
                 "parameters": [_UID, _PROJECT],
                 "requestBody": {"required": True, "content": {_JSON: {"schema": {
                     "type": "object", "required": ["note"], "properties": {
                         "license": {"type": ["string", "null"]}, "terms": {"type": ["object", "null"]},
                         "note": {"type": "string"}, "covers_sources": {"type": "boolean"}}},
                     "example": {"license": "studio-licence", "terms": {"commercial_use": "sell"},
                                 "note": "bought a commercial licence, invoice 123"}}}},
                 "responses": {"201": _ok("The paper-trail row", _OVERRIDE), **_err(400, 403, 404)}},
        "delete": {"tags": ["licences"], "summary": "Withdraw the asset's licence decision (recorded as well)",
                   "parameters": [_UID, _PROJECT, {**_q("note", "Why it is withdrawn"), "required": True}],
                   "responses": {"200": _ok("The paper-trail row", _OVERRIDE), **_err(400, 403, 404)}}},
}
