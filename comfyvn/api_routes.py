"""The HTTP API's route table as plain data: path, handler name, methods, area.

The server extension builds its Tornado routes from this table (``server_ext/routes.py`` resolves
each handler name in ``comfyvn_server_ext.handlers``), and the system checker
(:mod:`comfyvn.syscheck`) probes every route and method it lists, so the core knows the routes
without importing Jupyter or Tornado code, and a route is added in one place.  A test keeps
``methods`` equal to what each handler implements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Route:
    path: str  # OpenAPI-style ``{name}`` parameters
    handler: str  # ``<module>.<class>`` in comfyvn_server_ext.handlers (``openapi`` is comfyvn_server_ext.openapi)
    methods: tuple[str, ...]
    area: str  # one of AREAS
    websocket: bool = False


#: ingest (auth resource comfyvn:ingest; gated by features.enable_asset_ingest), assets (comfyvn:assets, the
#: original comfyvn's /api/assets/* included), modder hooks (comfyvn:hooks), licences (comfyvn:licences), library
#: roots in place (comfyvn:library; ``/assets/by-hash/{hash}`` is an assets route), the API description (comfyvn:api)
AREAS: Final = ("ingest", "assets", "hooks", "licences", "library", "api")

#: in matching order (specific paths before ``{uid}``)
ROUTES: Final = (
    Route("/api/ingest/queue", "ingest.QueueHandler", ("POST",), "ingest"),
    Route("/api/ingest/upload", "ingest.UploadHandler", ("POST",), "ingest"),
    Route("/api/ingest/status", "ingest.StatusHandler", ("GET",), "ingest"),
    Route("/api/ingest/jobs", "ingest.JobsHandler", ("GET",), "ingest"),
    Route("/api/ingest/jobs/{job_id}", "ingest.JobHandler", ("GET",), "ingest"),
    Route("/api/ingest/apply", "ingest.ApplyHandler", ("POST",), "ingest"),
    Route("/api/ingest/release", "ingest.ReleaseHandler", ("POST",), "ingest"),
    Route("/api/ingest/retry", "ingest.RetryHandler", ("POST",), "ingest"),
    Route("/api/ingest/cancel", "ingest.CancelHandler", ("POST",), "ingest"),
    Route("/assets", "assets.AssetsHandler", ("GET",), "assets"),
    Route("/assets/upload", "compat.UploadHandler", ("POST",), "assets"),  # ours + the original's form fields
    Route("/assets/register", "assets.RegisterHandler", ("POST",), "assets"),
    Route("/assets/bulk", "assets.BulkHandler", ("POST",), "assets"),
    Route("/assets/debug/hooks", "compat.DebugHooksHandler", ("GET",), "assets"),  # + the original's registry_hooks
    Route("/assets/debug/modder-hooks", "assets.DebugModderHooksHandler", ("GET",), "assets"),
    Route("/assets/debug/history", "assets.DebugHistoryHandler", ("GET",), "assets"),
    Route("/assets/by-hash/{hash}", "library.ByHashHandler", ("GET",), "assets"),  # every hash form
    Route("/assets/{uid}", "assets.AssetHandler", ("GET", "PATCH", "DELETE"), "assets"),
    Route("/assets/{uid}/sidecar", "assets.SidecarHandler", ("GET",), "assets"),
    Route("/assets/{uid}/thumbnail", "assets.ThumbnailHandler", ("GET",), "assets"),
    Route("/assets/{uid}/download", "assets.DownloadHandler", ("GET",), "assets"),
    Route("/api/assets/register", "compat.RegisterHandler", ("POST",), "assets"),  # the original's API
    Route("/api/assets/search", "compat.SearchHandler", ("GET",), "assets"),
    Route("/api/assets/{uid}", "compat.AssetHandler", ("GET",), "assets"),
    Route("/api/modder/hooks", "hooks.HooksHandler", ("GET",), "hooks"),
    Route("/api/modder/hooks/history", "hooks.HistoryHandler", ("GET",), "hooks"),
    Route("/api/modder/hooks/ws", "hooks.HookStreamHandler", ("GET",), "hooks", websocket=True),
    Route("/api/modder/hooks/stream", "hooks.HookStreamHandler", ("GET",), "hooks", websocket=True),
    Route("/api/modder/hooks/webhooks", "hooks.WebhooksHandler", ("GET", "POST"), "hooks"),
    Route("/api/modder/hooks/webhooks/{webhook_id}", "hooks.WebhookHandler", ("GET", "DELETE"), "hooks"),
    Route("/api/modder/hooks/webhooks/{webhook_id}/deliveries", "hooks.DeliveriesHandler", ("GET",), "hooks"),
    Route("/api/modder/hooks/test", "hooks.TestEventHandler", ("POST",), "hooks"),
    Route("/api/licences/check", "licences.CheckHandler", ("GET",), "licences"),
    Route("/api/licences/manifest", "licences.ManifestHandler", ("GET",), "licences"),
    Route("/api/licences/overrides/{uid}", "licences.OverrideHandler", ("GET", "POST", "DELETE"), "licences"),
    Route("/api/library", "library.LibraryHandler", ("GET",), "library"),
    Route("/api/library/scan", "library.ScanHandler", ("POST",), "library"),
    Route("/api/library/identify", "library.IdentifyHandler", ("POST",), "library"),
    Route("/api/library/duplicates", "library.DuplicatesHandler", ("GET",), "library"),
    Route("/api/comfyvn/openapi.json", "openapi.OpenAPIHandler", ("GET",), "api"),
)


def routes(*areas: str, websocket: bool | None = None) -> list[Route]:
    """The routes of ``areas`` (none given: all), in table order; ``websocket`` True/False keeps
    only WebSocket / only plain HTTP routes."""
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise ValueError(f"unknown route area(s) {', '.join(unknown)}; use {', '.join(AREAS)}")
    return [r for r in ROUTES if (not areas or r.area in areas) and (websocket is None or r.websocket is websocket)]


__all__ = ["AREAS", "ROUTES", "Route", "routes"]
