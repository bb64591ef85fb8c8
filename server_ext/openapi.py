"""The OpenAPI 3.1 description of every route, served at ``/api/comfyvn/openapi.json``.

``OPERATIONS`` documents each (path, method); :func:`build_openapi` adds the Jupyter auth
resource/action of each operation from the route table.  ``tests/server/test_openapi.py``
compares it with the handlers the server really registered, in both directions.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.auth.utils import HTTP_METHOD_TO_AUTH_ACTION
from tornado import web

from comfyvn import __version__, rights
from comfyvn.ingest.jobs import STATUSES

from .handlers.base import ComfyvnAPIHandler

JSON = "application/json"


def query_param(name: str, description: str, type_: str = "string", **schema: Any) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": type_, **schema}}


def path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def schema_ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def json_body(schema: dict, example: dict | None = None) -> dict:
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"required": True, "content": {JSON: content}}


def error_responses(*codes: int) -> dict:
    text = {400: "Invalid input", 403: "Not authenticated/authorised, or the feature is disabled",
            404: "Not found", 408: "Body too slow or unfinished in time (uploads.*); connection closed",
            409: "Conflict with the current state", 413: "Body too large",
            429: "Rate limited (see Retry-After)", 502: "Remote provider error",
            503: "Not ready yet, or too many uploads in progress (see Retry-After)"}
    return {str(c): {"$ref": "#/components/responses/Error"} if c == 403 else json_response(schema_ref("Error"), text[c])
            for c in codes}


PROJECT_PARAM = query_param("project", "Registry project (default: registry.default_project)")
_JOB_ID_BODY = json_body({"type": "object", "required": ["job_id"], "properties": {"job_id": {"type": "string"}}},
                     {"job_id": "3f2a9c1e7b4d"})
_UPLOAD_BODY = {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": "exactly one part (curl -F file=@picture.png); its filename is used "
                                "when ?filename= is not given"}}}}}}
_OBJ = {"type": "object"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRINGS_OR_CSV = {"oneOf": [_STRINGS, {"type": "string", "description": "comma-separated"}]}
_LIMIT = query_param("limit", "Maximum number of items", "integer", minimum=1)

OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    # ------------------------------------------------------------------ ingest
    "/api/ingest/queue": {"post": {
        "tags": ["ingest"], "summary": "Enqueue a local file (staged at once) or a remote pull (queued)",
        "requestBody": json_body({"type": "object", "properties": {
            "provider": {"type": "string", "default": "local",
                         "enum": ["local", "civitai", "huggingface", "furaffinity", "generic"]},
            "source_path": {"type": ["string", "null"], "description": "a file on the server (allowed roots)"},
            "remote_url": {"type": ["string", "null"]}, "metadata": {"type": ["object", "null"]},
            "dest_relative": {"type": ["string", "null"]}, "asset_type_hint": {"type": ["string", "null"]},
            "pin": {"type": "boolean"}, "terms_acknowledged": {"type": "boolean"},
            "project_id": {"type": ["string", "null"]}, "wait": {"type": "boolean"},
            "items": {"type": "array", "maxItems": 10000, "description":
                      "many files on the server at once (enqueue_many; answers 200 {jobs, errors}); each a path "
                      "or an object {source_path, metadata, dest_relative, asset_type_hint, pin, project_id, "
                      "provider, terms_acknowledged}; the other fields are then defaults for every item "
                      "(source_path, remote_url and wait are refused beside items)",
                      "items": {"oneOf": [{"type": "string"}, {"type": "object", "required": ["source_path"]}]}}}},
            {"provider": "local", "source_path": "/data/incoming/hero.png", "asset_type_hint": "images"}),
        "responses": {"201": json_response(schema_ref("Job"), "Staged job"), "200": json_response({"oneOf": [
            schema_ref("Job"), {"type": "object", "properties": {
                "jobs": {"type": "array", "items": schema_ref("Job")}, "errors": {"type": "array", "items": {
                    "type": "object", "properties": {"index": {"type": "integer"}, "source_path": {"type": "string"},
                                                     "error": {"type": "string"}, "message": {"type": "string"}}}}}}]},
            "Duplicate job, or with items: the staged/duplicate jobs and the items refused"),
                      "202": json_response(schema_ref("Job"), "Remote pull queued"), **error_responses(400, 403, 413, 429, 502)}}},
    "/api/ingest/upload": {"post": {
        "tags": ["ingest"], "summary": "Stream a file from the client and enqueue it (raw body or one multipart part)",
        "parameters": [query_param("filename", "File name (sanitised; required unless a multipart part names the file)"),
                       query_param("asset_type_hint", "Requested asset type"), query_param("dest_relative", "Destination path"),
                       query_param("metadata", "JSON object"), query_param("pin", "Pin in the dedup cache", "boolean"),
                       query_param("project_id", "Registry project")],
        "requestBody": _UPLOAD_BODY,
        "responses": {"201": json_response(schema_ref("Job"), "Staged job"), "200": json_response(schema_ref("Job"), "Duplicate job"),
                      **error_responses(400, 403, 408, 413, 429, 503)}}},
    "/api/ingest/status": {"get": {
        "tags": ["ingest"], "summary": "Queue summary and recent jobs, or one job; optionally the dedup cache",
        "parameters": [query_param("job_id", "One job instead of the summary"), _LIMIT,
                       query_param("include_cache", "Add the dedup cache snapshot as 'cache'", "boolean")],
        "responses": {"200": json_response({"type": "object", "properties": {
            "enabled": {"type": "boolean"}, "summary": _OBJ, "jobs": {"type": "array", "items": schema_ref("Job")},
            "job": schema_ref("Job"), "cache": _OBJ}}, "Status"), **error_responses(400, 403, 404)}}},
    "/api/ingest/jobs": {"get": {
        "tags": ["ingest"], "summary": "Jobs, newest first, with filters and a cursor",
        "parameters": [query_param("status", "Job status", enum=[str(s) for s in STATUSES]),
                       query_param("provider", "Provider name"), _LIMIT, query_param("cursor", "next_cursor of the previous page")],
        "responses": {"200": json_response({"type": "object", "properties": {
            "items": {"type": "array", "items": schema_ref("Job")}, "next_cursor": {"type": ["string", "null"]}}},
            "One page"), **error_responses(400, 403)}}},
    "/api/ingest/jobs/{job_id}": {"get": {
        "tags": ["ingest"], "summary": "One job", "parameters": [path_param("job_id", "Job id")],
        "responses": {"200": json_response(schema_ref("Job"), "The job"), **error_responses(403, 404)}}},
    "/api/ingest/apply": {"post": {
        "tags": ["ingest"], "summary": "Move staged jobs into the asset registry",
        "requestBody": {"required": False, "content": {JSON: {"schema": {"type": "object", "properties": {
            "job_ids": _STRINGS, "asset_type_override": {"type": ["string", "null"]}}},
            "example": {"job_ids": ["3f2a9c1e7b4d"]}}}},
        "responses": {"200": json_response({"type": "object", "properties": {
            k: {"type": "array"} for k in ("applied", "failed", "skipped", "unknown")}}, "Outcome per job"),
            **error_responses(400, 403)}}},
    "/api/ingest/release": {"post": {
        "tags": ["ingest"], "summary": "Release a staged job (drops its staging file and pin)",
        "requestBody": _JOB_ID_BODY, "responses": {"200": json_response(schema_ref("Job"), "The job"), **error_responses(400, 403, 404, 409)}}},
    "/api/ingest/retry": {"post": {
        "tags": ["ingest"], "summary": "Retry a failed job",
        "requestBody": _JOB_ID_BODY,
        "responses": {"200": json_response(schema_ref("Job"), "The job"), "202": json_response(schema_ref("Job"), "Re-queued remote pull"),
                      **error_responses(400, 403, 404, 409)}}},
    "/api/ingest/cancel": {"post": {
        "tags": ["ingest"], "summary": "Cancel a queued or downloading job",
        "requestBody": _JOB_ID_BODY, "responses": {"200": json_response(schema_ref("Job"), "The job"), **error_responses(400, 403, 404, 409)}}},
    # ------------------------------------------------------------------ assets
    "/assets": {"get": {
        "tags": ["assets"], "summary": "List assets (filters, keyset cursor)",
        "parameters": [query_param("type", "Asset type"), query_param("tags", "Tags (comma-separated or repeated)"),
                       query_param("tags_mode", "all | any", enum=["all", "any"]), query_param("license", "Licence"),
                       query_param("text", "Substring of path, type, tags, licence or metadata"), query_param("hash", "SHA-256"),
                       query_param("cursor", "next_cursor of the previous page"), query_param("limit", "1..1000", "integer"),
                       query_param("sort", "Sort column", enum=["created_at", "updated_at", "path", "bytes", "type", "uid"]),
                       query_param("order", "asc | desc", enum=["asc", "desc"]), query_param("total", "Include the total", "boolean"),
                       query_param("commercial_use", "Assets allowing at least this commercial use "
                          "(none < image < rent-civit < rent < sell)", enum=list(rights.COMMERCIAL_LEVELS)),
                       query_param("credit_required", "Credit required (not stated matches neither)", "boolean"),
                       query_param("derivatives", "Derivatives allowed (not stated matches neither)", "boolean"),
                       query_param("license_known", "A licence or terms are known", "boolean"),
                       PROJECT_PARAM],
        "responses": {"200": json_response({"type": "object", "properties": {
            "items": {"type": "array", "items": schema_ref("Asset")}, "next_cursor": {"type": ["string", "null"]},
            "total": {"type": "integer"}, "project": {"type": "string"}}}, "One page"), **error_responses(400, 403)}}},
    "/assets/upload": {"post": {
        "tags": ["assets"], "summary": "Stream a file from the client and register it (raw body or one multipart part)",
        "parameters": [query_param("filename", "File name (sanitised; required unless a multipart part names the file)"),
                       query_param("asset_type", "Asset type (default images/audio by extension)"),
                       query_param("dest_relative", "Path under the project's assets root"), query_param("tags", "Comma-separated"),
                       query_param("license", "Licence"), query_param("metadata", "JSON object"), PROJECT_PARAM],
        "requestBody": _UPLOAD_BODY,
        "responses": {"201": json_response(schema_ref("Asset"), "Registered"), "200": json_response(schema_ref("Asset"), "Already registered"),
                      **error_responses(400, 403, 408, 409, 413, 503)}}},
    "/assets/register": {"post": {
        "tags": ["assets"], "summary": "Register a file already on the server (inside the allowed roots)",
        "parameters": [PROJECT_PARAM],
        "requestBody": json_body({"type": "object", "required": ["path", "asset_type"], "properties": {
            "path": {"type": "string"}, "asset_type": {"type": "string"}, "dest_relative": {"type": ["string", "null"]},
            "metadata": {"type": ["object", "null"]}, "tags": _STRINGS_OR_CSV, "license": {"type": ["string", "null"]},
            "copy": {"type": "boolean", "default": True}}},
            {"path": "/home/me/art/hero.png", "asset_type": "images", "tags": ["hero"], "license": "cc0"}),
        "responses": {"201": json_response(schema_ref("Asset"), "Registered"), "200": json_response(schema_ref("Asset"), "Already registered"),
                      **error_responses(400, 403, 409)}}},
    "/assets/bulk": {"post": {
        "tags": ["assets"], "summary": "Add/remove tags and set/clear the licence of many assets",
        "parameters": [PROJECT_PARAM],
        "requestBody": json_body({"type": "object", "required": ["uids"], "properties": {
            "uids": _STRINGS, "add_tags": _STRINGS_OR_CSV, "remove_tags": _STRINGS_OR_CSV,
            "license": {"type": ["string", "null"], "description": "null clears"}}},
            {"uids": ["4e3a0c1d2b3f4a5b"], "add_tags": ["hero"], "license": "cc-by-4.0"}),
        "responses": {"200": json_response({"type": "object", "properties": {
            "items": {"type": "array", "items": schema_ref("Asset")}, "count": {"type": "integer"}}}, "Updated assets"),
            **error_responses(400, 403, 404)}}},
    "/assets/debug/hooks": {"get": {
        "tags": ["assets"], "summary": "In-process registry listeners of this server", "parameters": [PROJECT_PARAM],
        "responses": {"200": json_response({"type": "object", "properties": {"project": {"type": "string"}, "hooks": {
            "type": "object", "additionalProperties": _STRINGS}}}, "Listener names per event"), **error_responses(403)}}},
    "/assets/debug/modder-hooks": {"get": {
        "tags": ["assets"], "summary": "Asset hook specs with payload fields",
        "responses": {"200": json_response({"type": "object", "properties": {"hooks": {"type": "array",
                                                                             "items": schema_ref("HookSpec")}}},
                                   "Specs"), **error_responses(403)}}},
    "/assets/debug/history": {"get": {
        "tags": ["assets"], "summary": "Newest asset envelopes", "parameters": [query_param("limit", "1..1000", "integer")],
        "responses": {"200": json_response({"type": "object", "properties": {"items": {"type": "array",
                                                                             "items": schema_ref("Envelope")}}},
                                   "Envelopes, oldest first"), **error_responses(400, 403)}}},
    "/assets/{uid}": {
        "get": {"tags": ["assets"], "summary": "One asset (with thumbnail status)",
                "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM],
                "responses": {"200": json_response(schema_ref("Asset"), "The asset"), **error_responses(403, 404)}},
        "patch": {"tags": ["assets"], "summary": "Update metadata, tags or licence",
                  "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM],
                  "requestBody": json_body({"type": "object", "properties": {
                      "metadata": {"type": ["object", "null"]}, "replace": {"type": "boolean"},
                      "add_tags": _STRINGS_OR_CSV, "remove_tags": _STRINGS_OR_CSV,
                      "license": {"type": ["string", "null"], "description": "null clears"},
                      "expected_version": {"type": ["integer", "null"]}}},
                      {"metadata": {"artist": "mika"}, "add_tags": ["hero"], "expected_version": 1}),
                  "responses": {"200": json_response(schema_ref("Asset"), "Updated asset"), **error_responses(400, 403, 404, 409)}},
        "delete": {"tags": ["assets"], "summary": "Remove an asset (file and sidecar to the trash folder)",
                   "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM,
                                  query_param("delete_files", "Delete the files instead of trashing them", "boolean")],
                   "responses": {"200": json_response(schema_ref("Asset"), "The removed asset, with trashed_to"),
                                 **error_responses(400, 403, 404)}}},
    "/assets/{uid}/sidecar": {"get": {
        "tags": ["assets"], "summary": "The parsed sidecar JSON", "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM],
        "responses": {"200": json_response({"type": "object", "properties": {"uid": {"type": "string"},
                                                                     "path": {"type": "string"}, "sidecar": _OBJ}},
                                   "Sidecar"), **error_responses(403, 404, 409)}}},
    "/assets/{uid}/thumbnail": {"get": {
        "tags": ["assets"], "summary": "Thumbnail PNG (or waveform JSON), streamed",
        "parameters": [path_param("uid", "Asset uid"), query_param("size", "256 | 512 | waveform"), PROJECT_PARAM],
        "responses": {"200": {"description": "PNG or waveform JSON",
                              "content": {"image/png": {"schema": {"type": "string"}}, JSON: {"schema": _OBJ}}},
                      **error_responses(400, 403, 404, 503)}}},
    "/assets/{uid}/download": {"get": {
        "tags": ["assets"], "summary": "The asset file, streamed (ETag = SHA-256)",
        "parameters": [path_param("uid", "Asset uid"), PROJECT_PARAM],
        "responses": {"200": {"description": "File bytes",
                              "content": {"application/octet-stream": {"schema": {"type": "string"}}}},
                      "304": {"description": "Not modified (If-None-Match)"}, **error_responses(403, 404)}}},
    # ------------------------------------------------------------------ modder hooks
    "/api/modder/hooks": {"get": {
        "tags": ["hooks"], "summary": "Every hook with payload descriptors",
        "parameters": [query_param("category", "asset | ingest | system", enum=["asset", "ingest", "system"])],
        "responses": {"200": json_response({"type": "object", "properties": {
            "hooks": {"type": "array", "items": schema_ref("HookSpec")}, "last_event_id": {"type": "integer"},
            "websocket": _STRINGS}}, "Specs"), **error_responses(400, 403)}}},
    "/api/modder/hooks/history": {"get": {
        "tags": ["hooks"], "summary": "Newest envelopes, oldest first",
        "parameters": [query_param("limit", "1..10000", "integer"), query_param("topics", "Hook names (comma-separated, globs)"),
                       query_param("before_id", "Page back from this event id", "integer")],
        "responses": {"200": json_response({"type": "object", "properties": {
            "items": {"type": "array", "items": schema_ref("Envelope")}, "topics": {"type": ["array", "null"]}}},
            "Envelopes"), **error_responses(400, 403)}}},
    "/api/modder/hooks/ws": {"get": {
        "tags": ["hooks"], "summary": "WebSocket event stream (see docs/HTTP_API.md for the protocol)",
        "parameters": [query_param("topics", "Hook names"), query_param("last_event_id", "Resume after this id", "integer")],
        "responses": {"101": {"description": "Switching protocols"}, **error_responses(403)}}},
    "/api/modder/hooks/stream": {"get": {
        "tags": ["hooks"], "summary": "Same WebSocket stream as /api/modder/hooks/ws",
        "parameters": [query_param("topics", "Hook names"), query_param("last_event_id", "Resume after this id", "integer")],
        "responses": {"101": {"description": "Switching protocols"}, **error_responses(403)}}},
    "/api/modder/hooks/webhooks": {
        "get": {"tags": ["hooks"], "summary": "Registered webhooks (secrets never returned)",
                "parameters": [query_param("event", "Only this hook")],
                "responses": {"200": json_response({"type": "object", "properties": {
                    "items": {"type": "array", "items": schema_ref("Webhook")}}}, "Webhooks"), **error_responses(403)}},
        "post": {"tags": ["hooks"], "summary": "Register a signed webhook",
                 "requestBody": json_body({"type": "object", "required": ["event", "url"], "properties": {
                     "event": {"type": "string"}, "url": {"type": "string"}, "secret": {"type": ["string", "null"]}}},
                     {"event": "on_asset_meta_updated", "url": "https://example.org/payloads", "secret": "s3cret"}),
                 "responses": {"201": json_response(schema_ref("Webhook"), "Registered"), **error_responses(400, 403)}}},
    "/api/modder/hooks/webhooks/{webhook_id}": {
        "get": {"tags": ["hooks"], "summary": "One webhook", "parameters": [path_param("webhook_id", "Webhook id")],
                "responses": {"200": json_response(schema_ref("Webhook"), "The webhook"), **error_responses(403, 404)}},
        "delete": {"tags": ["hooks"], "summary": "Delete a webhook", "parameters": [path_param("webhook_id", "Webhook id")],
                   "responses": {"200": json_response({"type": "object", "properties": {"deleted": {"type": "string"}}},
                                              "Deleted"), **error_responses(403, 404)}}},
    "/api/modder/hooks/webhooks/{webhook_id}/deliveries": {"get": {
        "tags": ["hooks"], "summary": "Delivery log of a webhook, newest first",
        "parameters": [path_param("webhook_id", "Webhook id"), query_param("limit", "1..1000", "integer")],
        "responses": {"200": json_response({"type": "object", "properties": {
            "webhook_id": {"type": "string"}, "items": {"type": "array", "items": _OBJ}}}, "Deliveries"),
            **error_responses(400, 403, 404)}}},
    "/api/modder/hooks/test": {"post": {
        "tags": ["hooks"], "summary": "Emit an on_modder_test event",
        "requestBody": {"required": False, "content": {JSON: {"schema": {"type": "object", "properties": {
            "message": {"type": "string"}, "data": _OBJ}}, "example": {"message": "hello"}}}},
        "responses": {"201": json_response(schema_ref("Envelope"), "The emitted envelope"), **error_responses(400, 403)}}},
    "/api/comfyvn/openapi.json": {"get": {
        "tags": ["meta"], "summary": "This document",
        "responses": {"200": json_response(_OBJ, "OpenAPI 3.1 document"), **error_responses(403)}}},
}

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {
        "token": {"type": "apiKey", "in": "header", "name": "Authorization",
                  "description": "Jupyter token: 'Authorization: token <token>'"},
        "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
    },
    "responses": {"Error": json_response(schema_ref("Error"), "Not authenticated/authorised, or the feature is disabled")},
    "schemas": {
        "Error": {"type": "object", "required": ["error", "message"],
                  "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
        "Job": {"type": "object", "properties": {k: {} for k in (
            "job_id", "provider", "status", "source_path", "remote_url", "dest_relative", "asset_type_hint", "pin",
            "terms_acknowledged", "digest", "bytes", "bytes_done", "bytes_total", "staging_path", "dedup_of",
            "existing_uid", "asset_uid", "notes", "error", "errors", "attempts", "metadata", "project_id",
            "created_at", "updated_at")}},
        "Asset": {"type": "object", "properties": {k: {} for k in (
            "uid", "type", "path", "hash", "bytes", "tags", "license", "origin", "version", "created_at",
            "updated_at", "meta", "preview", "provenance", "project_id", "abs_path", "sidecar", "license_terms",
            "license_known")}},
        "Envelope": {"type": "object", "required": ["id", "event", "ts", "data"], "properties": {
            "id": {"type": "integer"}, "event": {"type": "string"}, "ts": {"type": "number"}, "data": _OBJ}},
        "HookSpec": {"type": "object", "properties": {k: {} for k in (
            "name", "category", "description", "payload", "hook_event", "alias_of", "ws_topic")}},
        "Webhook": {"type": "object", "properties": {
            "id": {}, "event": {"type": "string"}, "url": {"type": "string"}, "has_secret": {"type": "boolean"}}},
    },
}


def build_openapi(base_url: str = "/") -> dict[str, Any]:
    """The OpenAPI document, with each operation's Jupyter auth resource and action."""
    from .handlers.compat import OPENAPI_OPERATIONS
    from .handlers.library import OPENAPI_OPERATIONS as LIBRARY_OPERATIONS
    from .handlers.licences import OPENAPI_OPERATIONS as LICENCE_OPERATIONS
    from .routes import ROUTES

    resources = {path: getattr(handler, "auth_resource", None) for path, handler in ROUTES}
    paths: dict[str, Any] = {}
    for path, ops in {**OPERATIONS, **OPENAPI_OPERATIONS, **LICENCE_OPERATIONS, **LIBRARY_OPERATIONS}.items():
        paths[path] = {}
        for method, op in ops.items():
            action = "execute" if path.endswith(("/ws", "/stream")) else HTTP_METHOD_TO_AUTH_ACTION[method.upper()]
            paths[path][method] = {**op, "x-jupyter-auth": {"resource": resources.get(path), "action": action}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "comfyvn asset workbench API", "version": __version__,
                 "description": "Ingest queue, asset registry and modder hooks, served by the comfyvn_server_ext "
                                "Jupyter server extension. Every route needs the Jupyter token."},
        "servers": [{"url": base_url.rstrip("/") or "/"}],
        "security": [{"token": []}, {"tokenQuery": []}],
        "paths": paths,
        "components": COMPONENTS,
    }


class OpenAPIHandler(ComfyvnAPIHandler):
    auth_resource = "comfyvn:api"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(build_openapi(self.base_url))
