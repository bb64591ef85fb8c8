"""comfyvn's Jupyter server extension: the ingest, asset and modder-hook HTTP API.

Installed as the package ``comfyvn_server_ext`` and enabled automatically by
``etc/jupyter/jupyter_server_config.d/comfyvn_server_ext.json``.  Routes are listed in
:mod:`comfyvn_server_ext.routes` and documented in ``docs/HTTP_API.md`` and the OpenAPI
document served at ``/api/comfyvn/openapi.json``.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import ComfyvnExtension

    return [{"module": "comfyvn_server_ext", "app": ComfyvnExtension}]
