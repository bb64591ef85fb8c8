"""Helpers shared by the server-extension tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image


@dataclass
class Reply:
    code: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()




def assert_error(r: Reply, code: int, error: str, *words: str) -> None:
    """``r`` is a JSON error ``{"error": error, "message": ...}`` with status ``code`` naming ``words``."""
    assert r.code == code, (r.code, r.body)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    body = r.json
    assert body["error"] == error, body
    for word in words:
        assert word in body["message"], body
