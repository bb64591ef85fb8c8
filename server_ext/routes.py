"""The route table: :data:`comfyvn.api_routes.ROUTES` (plain data the system checker reads too)
with each handler name resolved to its class, in matching order (specific paths before ``{uid}``).

Paths use OpenAPI-style ``{name}`` parameters; :func:`handlers` turns them into Tornado
patterns (``base_url`` is prepended by the ``ExtensionApp``).  The OpenAPI document and the
tests read this table, so a route cannot be added without being documented and tested.
"""

from __future__ import annotations

import re

from tornado.web import RequestHandler

from comfyvn.api_routes import ROUTES as ROUTE_TABLE

from . import openapi
from .handlers import assets, compat, hooks, ingest, library, licences

_MODULES = {"assets": assets, "compat": compat, "hooks": hooks, "ingest": ingest, "library": library,
            "licences": licences, "openapi": openapi}


def handler_class(name: str) -> type[RequestHandler]:
    """``"assets.AssetHandler"`` -> the class (a name the table gives that does not exist is an error)."""
    module, _, cls = name.partition(".")
    handler = getattr(_MODULES[module], cls)
    if not (isinstance(handler, type) and issubclass(handler, RequestHandler)):
        raise TypeError(f"{name} is not a RequestHandler")
    return handler


ROUTES: list[tuple[str, type[RequestHandler]]] = [(route.path, handler_class(route.handler)) for route in ROUTE_TABLE]

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
