"""Browser tests: Voila on a seeded workspace, Debian's Chromium through Playwright (async API).

Run them in their own pytest invocation (``pytest -m browser tests/browser``): Playwright's
event loop and pytest-jupyter's must not share one run.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from browser_helpers import ASSETS, picture

from comfyvn.config import set_feature
from comfyvn.studio.core.asset_registry import AssetRegistry


@pytest.fixture
def seeded_ws(ws, tmp_path):
    """A workspace with eight generated pictures registered (thumbnails ready) and ingest enabled."""
    registry = AssetRegistry(ws=ws)
    src = tmp_path / "src"
    src.mkdir()
    for i, (kind, name, colours, tags, licence, meta) in enumerate(ASSETS):
        registry.register_file(picture(src / f"{name}.png", kind, colours, i), kind, tags=tags,
                               license_tag=licence, metadata=meta)
    assert registry.wait_for_thumbnails(60)
    set_feature("enable_asset_ingest", True, ws)
    (ws.root / "incoming").mkdir()
    return ws


@pytest.fixture
def voila_env(seeded_ws) -> dict[str, str]:
    env = dict(os.environ)
    env["COMFYVN_HOME"] = str(seeded_ws.root)
    env.pop("JUPYTER_TOKEN", None)
    return env


@pytest.fixture(scope="session", autouse=True)
def _chromium_present():
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.fail("Debian's chromium is required (apt-get install chromium); .ci/run installs it")
    return sys.executable
