"""Fixtures for the dashboard logic tests: a registry on a fresh workspace and generated PNGs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from widget_helpers import make_png

from comfyvn.studio.core.asset_registry import AssetRegistry

# (type, name, tags, licence, metadata)
SAMPLES = [
    ("backgrounds", "classroom", "school, dusk", "cc0", {"title": "Classroom at dusk"}),
    ("backgrounds", "rooftop", "school, day", "cc0", {"title": "Rooftop"}),
    ("backgrounds", "station", "city, night", "cc-by-4.0", {"title": "Station"}),
    ("characters", "aoi", "aoi, sprite", "cc-by-4.0", {"title": "Aoi", "pose": {"mood": "neutral"}}),
    ("characters", "ren", "ren, sprite", None, {"title": "Ren"}),
    ("props", "umbrella", "rain, item", "cc0", {"title": "Umbrella"}),
    ("props", "letter", "item, story", None, {"title": "Lettre d'amour ✉", "note": {"lang": "fr", "ü": [1, 2]}}),
]


@pytest.fixture
def registry(ws) -> AssetRegistry:
    return AssetRegistry(ws=ws)


@pytest.fixture
def png_factory(tmp_path) -> Callable[[int], Path]:
    src = tmp_path / "src"
    src.mkdir()
    return lambda seed: make_png(src / f"img_{seed}.png", seed)


@pytest.fixture
def seeded(registry, png_factory) -> list[dict]:
    """Seven registered images with types, tags, licences and nested metadata (thumbnails ready)."""
    recs = []
    for i, (kind, name, tags, licence, meta) in enumerate(SAMPLES):
        src = png_factory(i)
        recs.append(registry.register_file(src, kind, dest_relative=f"{kind}/{name}.png", tags=tags,
                                           license_tag=licence, metadata=meta))
        time.sleep(0.002)  # distinct created_at, so "newest first" is deterministic
    assert registry.wait_for_thumbnails(30)
    return recs
