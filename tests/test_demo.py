"""The demo workspace the README's run command seeds."""

from __future__ import annotations

import json

from comfyvn import demo
from comfyvn.config import feature_enabled, workspace
from comfyvn.studio.core.asset_registry import AssetRegistry


def test_seed_creates_assets_with_thumbnails_and_is_idempotent(tmp_path):
    root = tmp_path / "demo"
    first = demo.seed(root, quiet=True)
    assert first["registered"] == len(demo._IMAGES) + len(demo._SOUNDS)
    ws = workspace(root)
    assert feature_enabled("enable_asset_ingest", ws) is True
    reg = AssetRegistry(project_id="default", ws=ws)
    assert reg.count() == first["registered"]
    page = reg.query_assets(asset_type="backgrounds", tags=["school"], with_total=True)
    assert page["total"] == 3
    some = page["items"][0]
    assert reg.resolve_thumbnail_path(some["uid"], 256) is not None
    sidecar = json.loads(open(some["sidecar"], encoding="utf-8").read())
    assert sidecar["uid"] == some["uid"] and "school" in sidecar["tags"]
    assert sorted(p.name for p in (root / "incoming").iterdir()) == ["cafe_morning.png", "park_autumn.png"]
    assert demo.seed(root, quiet=True)["registered"] == 0
    assert reg.count() == first["registered"]
