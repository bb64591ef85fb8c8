"""The OpenAPI document matches the handlers the server really registered (both directions),
is a valid OpenAPI 3.1 document, and every handler method carries Jupyter's auth decorators."""

from __future__ import annotations

import re

from comfyvn_server_ext.routes import ROUTES, http_methods
from openapi_spec_validator import validate
from tornado.routing import PathMatches, Router
from tornado.websocket import WebSocketHandler


def registered_routes(app, base_url: str) -> set[tuple[str, str]]:
    """(path template, method) of every comfyvn handler in the running Tornado application."""
    found: set[tuple[str, str]] = set()

    def walk(router: Router) -> None:
        for rule in getattr(router, "rules", []):
            target = rule.target
            if isinstance(target, Router):
                walk(target)
            elif isinstance(target, type) and target.__module__.startswith("comfyvn_server_ext"):
                assert isinstance(rule.matcher, PathMatches)
                pattern = rule.matcher.regex.pattern
                assert pattern.startswith(base_url), pattern
                path = "/" + pattern[len(base_url):].removesuffix("$").removesuffix("/?")
                path = re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", path)
                found.update((path, m.lower()) for m in http_methods(target))

    walk(app.default_router)
    return found


async def test_openapi_matches_registered_handlers(api, jp_serverapp, jp_base_url):
    r = await api("GET", "/api/comfyvn/openapi.json")
    assert r.code == 200
    doc = r.json
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["servers"] == [{"url": jp_base_url.rstrip("/")}]
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    registered = registered_routes(jp_serverapp.web_app, jp_base_url)
    assert not documented - registered, f"documented but not served: {sorted(documented - registered)}"
    assert not registered - documented, f"served but not documented: {sorted(registered - documented)}"
    assert len(registered) == 46
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)
            assert op["x-jupyter-auth"]["resource"].startswith("comfyvn:"), (method, path)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(re.findall(r"\{(\w+)\}", path)), (method, path)


def test_every_handler_method_has_jupyter_auth_decorators():
    """``@web.authenticated`` over ``@authorized`` (``@ws_authenticated`` on sockets) on every method."""
    for path, handler in ROUTES:
        for method in http_methods(handler):
            fn = getattr(handler, method.lower())
            if issubclass(handler, WebSocketHandler):
                assert getattr(fn, "__allow_unauthenticated", None) is False, path  # ws_authenticated
                continue
            assert fn.__code__.co_qualname.startswith("authenticated"), (method, path)
            inner = fn.__wrapped__
            assert inner.__code__.co_qualname.startswith("authorized"), (method, path)
            assert handler.auth_resource.startswith("comfyvn:"), path
