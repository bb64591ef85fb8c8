"""The route table: one line per URL, in matching order (specific paths before ``{uid}``).

Paths use OpenAPI-style ``{name}`` parameters; :func:`handlers` turns them into Tornado
patterns (``base_url`` is prepended by the ``ExtensionApp``).  The OpenAPI document and the
tests read this table, so a route cannot be added without being documented and tested.
"""

from __future__ import annotations

import re

from tornado.web import RequestHandler

from .handlers import assets, compat, hooks, ingest, library
from .openapi import OpenAPIHandler

ROUTES: list[tuple[str, type[RequestHandler]]] = [
    # ingest (auth resource comfyvn:ingest; gated by features.enable_asset_ingest)
    ("/api/ingest/queue", ingest.QueueHandler),
    ("/api/ingest/upload", ingest.UploadHandler),
    ("/api/ingest/status", ingest.StatusHandler),
    ("/api/ingest/jobs", ingest.JobsHandler),
    ("/api/ingest/jobs/{job_id}", ingest.JobHandler),
    ("/api/ingest/apply", ingest.ApplyHandler),
    ("/api/ingest/release", ingest.ReleaseHandler),
    ("/api/ingest/retry", ingest.RetryHandler),
    ("/api/ingest/cancel", ingest.CancelHandler),
    # assets (comfyvn:assets)
    ("/assets", assets.AssetsHandler),
    ("/assets/upload", compat.UploadHandler),  # ours + the original's multipart text fields
    ("/assets/register", assets.RegisterHandler),
    ("/assets/bulk", assets.BulkHandler),
    ("/assets/debug/hooks", compat.DebugHooksHandler),  # ours + the original's registry_hooks, modder_hooks
    ("/assets/debug/modder-hooks", assets.DebugModderHooksHandler),
    ("/assets/debug/history", assets.DebugHistoryHandler),
    ("/assets/by-hash/{hash}", library.ByHashHandler),  # every hash form (comfyvn.library)
    ("/assets/{uid}", assets.AssetHandler),
    ("/assets/{uid}/sidecar", assets.SidecarHandler),
    ("/assets/{uid}/thumbnail", assets.ThumbnailHandler),
    ("/assets/{uid}/download", assets.DownloadHandler),
    # the original comfyvn's asset API (comfyvn:assets; docs/MIGRATING.md)
    ("/api/assets/register", compat.RegisterHandler),
    ("/api/assets/search", compat.SearchHandler),
    ("/api/assets/{uid}", compat.AssetHandler),
    # library roots in place (comfyvn:library)
    ("/library", library.LibraryHandler),
    ("/library/scan", library.ScanHandler),
    ("/library/identify", library.IdentifyHandler),
    ("/library/duplicates", library.DuplicatesHandler),
    # modder hooks (comfyvn:hooks)
    ("/api/modder/hooks", hooks.HooksHandler),
    ("/api/modder/hooks/history", hooks.HistoryHandler),
    ("/api/modder/hooks/ws", hooks.HookStreamHandler),
    ("/api/modder/hooks/stream", hooks.HookStreamHandler),
    ("/api/modder/hooks/webhooks", hooks.WebhooksHandler),
    ("/api/modder/hooks/webhooks/{webhook_id}", hooks.WebhookHandler),
    ("/api/modder/hooks/webhooks/{webhook_id}/deliveries", hooks.DeliveriesHandler),
    ("/api/modder/hooks/test", hooks.TestEventHandler),
    # the API description (comfyvn:api)
    ("/api/comfyvn/openapi.json", OpenAPIHandler),
]

_PARAM = re.compile(r"\{(\w+)\}")


def to_pattern(path: str) -> str:
    """``/assets/{uid}`` -> ``/assets/(?P<uid>[^/]+)`` (a trailing slash is accepted)."""
    return _PARAM.sub(lambda m: f"(?P<{m.group(1)}>[^/]+)", path) + "/?"


def handlers() -> list[tuple[str, type[RequestHandler]]]:
    return [(to_pattern(path), handler) for path, handler in ROUTES]


def http_methods(handler: type[RequestHandler]) -> list[str]:
    """The HTTP methods a handler implements (a WebSocket handler answers GET, the upgrade)."""
    from tornado.websocket import WebSocketHandler

    if issubclass(handler, WebSocketHandler):
        return ["GET"]
    return [m.upper() for m in ("get", "post", "put", "patch", "delete")
            if getattr(handler, m) is not getattr(RequestHandler, m)]
