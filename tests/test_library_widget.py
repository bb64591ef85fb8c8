"""The Library dashboard (roots, progress from scan events, duplicates, identify now) and the gallery's
search box finding an asset by any hash form."""

from __future__ import annotations

import os
import time
from pathlib import Path

from comfyvn.config import update_config
from comfyvn.hashforms import hash_path
from comfyvn.hooks.events import read_events
from comfyvn.library.scan import scan_library
from comfyvn.studio.core.asset_registry import AssetRegistry
from widgets.app import DASHBOARDS
from widgets.gallery_model import GalleryModel
from widgets.library import LibraryDashboard
from widgets.library_model import LibraryModel

OLD_NS = 1_600_000_000 * 10**9


def tree(ws, tmp_path) -> Path:
    root = tmp_path / "models"
    for rel, data in (("loras/a.safetensors", b"A" * 20_000), ("loras/b/a-copy.safetensors", b"A" * 20_000),
                      ("checkpoints/c.ckpt", b"C" * 1_300_000)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(OLD_NS, OLD_NS))
    update_config({"library": {"roots": [{"name": "comfy", "path": str(root), "layout": "comfyui"}]}}, ws)
    return root


def test_the_dashboard_is_a_workbench_tab():
    assert DASHBOARDS["library"][0] == "Library"


def test_model_follows_a_scan_through_its_events(ws, tmp_path):
    tree(ws, tmp_path)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    model = LibraryModel(reg)
    scan_library(ws=ws, registry=reg)
    events = read_events(reg.db.conn, topics=["on_library_scan_started", "on_library_scan_progress",
                                              "on_library_scan_finished"])
    hashing = [e for e in events if e["event"] == "on_library_scan_progress" and e["data"]["phase"] == "hash"]
    model.apply_events([events[0], *hashing[-1:]])
    assert model.scanning
    fraction, text = model.progress_text()
    assert 0.0 <= fraction <= 1.0 and "files" in text and "/s" in text
    assert model.apply_events(events[-1:]) is True and not model.scanning
    model.refresh()
    [row] = model.rows()
    assert row["cells"]["files"] == 3 and row["cells"]["unidentified"] == 2
    # chip cells are [text, tone], the table's format (a dict showed "[object Object]")
    assert row["cells"]["missing"] == ["0", "ok"] and row["cells"]["available"] == ["mounted", "ok"]
    assert model.duplicates["reclaimable_bytes"] == 20_000 and model.last["files"] == 3


def test_dashboard_scan_button_and_render(ws, tmp_path):
    tree(ws, tmp_path)
    dash = LibraryDashboard(AssetRegistry("default", ws=ws, make_thumbnails=False), live=False)
    dash.scan_button.click()
    for _ in range(400):
        dash.model.refresh()
        if dash.model.last:
            break
        time.sleep(0.05)
    dash.render()
    assert dash.table.rows[0]["cells"]["files"] == 3
    assert "19.5 KiB</b> reclaimable" in dash.duplicates.value
    assert "3 files" in dash.summary.value
    # Civitai unreachable (nothing listens on port 9): a readable error in the status bar, not a crash
    update_config({"ingest": {"allow_private_addresses": True, "allow_insecure_http": True,
                              "providers": {"civitai": {"base_url": "http://127.0.0.1:9", "rate_limit_rps": 50}}}}, ws)
    dash.identify(wait=True)
    assert "Identify failed" in dash.status.widget.value and "127.0.0.1" in dash.status.widget.value
    assert dash.identify_button.disabled is False


def test_gallery_search_box_accepts_any_hash_form(ws, tmp_path):
    root = tree(ws, tmp_path)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    scan_library(ws=ws, registry=reg)
    forms = hash_path(root / "checkpoints" / "c.ckpt")
    gallery = GalleryModel(reg)
    for value in (forms.autov2.upper(), f"[{forms.autov2}]", forms.blake3, forms.crc32, forms.autov1):
        items = gallery.set_filter(text=value)
        assert [i["uid"] for i in items] == [forms.sha256[:16]], value
    assert len(gallery.set_filter(text="loras")) == 1  # plain text still searches paths


def test_model_shows_the_autov3_phase_after_the_summary(ws, tmp_path, monkeypatch):
    import comfyvn.library.scan as scan_mod

    monkeypatch.setattr(scan_mod, "DEFER_AUTOV3_FROM", 1)  # the small test files stand for big ones
    root = tree(ws, tmp_path)
    (root / "loras" / "a.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}" + b"A" * 20_000)
    os.utime(root / "loras" / "a.safetensors", ns=(OLD_NS, OLD_NS))
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    model = LibraryModel(reg)
    scan_library(ws=ws, registry=reg)
    events = read_events(reg.db.conn, topics=["on_library_scan_started", "on_library_scan_progress",
                                              "on_library_scan_finished"])
    finished = next(i for i, e in enumerate(events) if e["event"] == "on_library_scan_finished")
    v3 = [e for e in events[finished:] if e["data"].get("phase") == "autov3"]
    assert v3, "no AutoV3 progress after the summary"
    model.apply_events([events[0], *events[1:finished + 1], v3[-1]])
    assert model.scanning
    fraction, text = model.progress_text()
    data = v3[-1]["data"]
    assert data["files_total"] == 2  # a.safetensors and its (now different) copy
    assert "autov3" in text and f"files {data['files_done']}/2" in text and 0.0 <= fraction <= 1.0
    model.apply_events(events[-1:])  # the final "done" progress
    assert not model.scanning and model.progress is None
