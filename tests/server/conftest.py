"""Fixtures for the server-extension tests (pytest-jupyter, served under base_url ``/a%40b/``).

Every test server runs with ``allow_unauthenticated_access = False`` and the extension
pointed at the test's own workspace.  ``@pytest.mark.comfyvn(key=value)`` overrides
``ComfyvnExtension`` settings for one test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Reply, png_bytes
from traitlets.config import Config

from comfyvn.config import set_feature


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyvn(**settings): ComfyvnExtension settings for this test's server")
    config.addinivalue_line("markers", "serverapp(**settings): extra ServerApp settings for this test's server")


@pytest.fixture
def jp_server_config(ws, request):
    settings: dict[str, Any] = {"workspace": str(ws.root), "ws_ping_seconds": 60.0}
    marker = request.node.get_closest_marker("comfyvn")
    if marker is not None:
        settings.update(marker.kwargs)
    server: dict[str, Any] = {"jpserver_extensions": {"comfyvn_server_ext": True, "jupyter_server_terminals": False},
                              "allow_unauthenticated_access": False}
    marker = request.node.get_closest_marker("serverapp")
    if marker is not None:
        server.update(marker.kwargs)
    return Config({"ServerApp": server, "ComfyvnExtension": settings})


@pytest.fixture
def ingest_on(ws):
    set_feature("enable_asset_ingest", True, ws)
    return ws


@pytest.fixture
def api(jp_fetch):
    """``await api("GET", "/assets", params=..., body=... | raw=..., headers=...)`` -> Reply (never raises)."""

    async def call(method: str, path: str, *, body: Any = None, raw: bytes | None = None,
                   params: dict | None = None, headers: dict | None = None) -> Reply:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False, "params": params, "headers": headers}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif raw is not None:
            kwargs["body"] = raw
        elif method in ("POST", "PATCH", "PUT"):
            kwargs["body"] = b""
        resp = await jp_fetch(path.lstrip("/"), **kwargs)
        return Reply(resp.code, resp.headers, resp.body or b"")

    return call


@pytest.fixture
def make_png(ws):
    """Write a distinct PNG inside the workspace and return its path."""
    counter = iter(range(1, 10_000))

    def make(name: str = "", color: tuple[int, int, int] | None = None) -> Path:
        n = next(counter)
        folder = ws.root / "incoming"
        folder.mkdir(exist_ok=True)
        path = folder / (name or f"picture{n}.png")
        path.write_bytes(png_bytes(color or (n * 7 % 256, n * 13 % 256, 90)))
        return path

    return make
