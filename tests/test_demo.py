"""The demo workspace the README's run command seeds: a small story that is true on disk."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

from comfyvn import demo
from comfyvn.config import feature_enabled, workspace
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.library.duplicates import duplicate_report
from comfyvn.registry.rebuild import audit_sidecars
from comfyvn.studio.core.asset_registry import AssetRegistry


def test_seed_creates_assets_with_thumbnails_and_is_idempotent(tmp_path):
    root = tmp_path / "demo"
    first = demo.seed(root, quiet=True)
    assert first["registered"] == len(demo._IMAGES) + len(demo._SOUNDS) + len(demo._MODELS)
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
    assert sorted(r["meta"]["title"] for r in reg.iter_assets()) == sorted(demo.titles())
    assert demo.seed(root, quiet=True)["registered"] == 0
    assert reg.count() == first["registered"]


def test_every_demo_picture_and_sound_is_distinct(tmp_path):
    demo.seed(tmp_path / "demo", quiet=True)
    reg = AssetRegistry(project_id="default", ws=workspace(tmp_path / "demo"))
    rows = list(reg.iter_assets())
    digests = {hashlib.sha256(Path(r["abs_path"]).read_bytes()).hexdigest() for r in rows}
    assert len(digests) == len(rows) == len(demo._IMAGES) + len(demo._SOUNDS) + len(demo._MODELS)
    # two expressions of one character differ in the face, not only in a colour
    from PIL import Image, ImageChops

    faces = [Image.open(reg.assets_root / f"characters/aoi_{e}.png").convert("L").crop((120, 100, 280, 220))
             for e in ("neutral", "smile")]
    assert ImageChops.difference(*faces).getbbox() is not None
    lengths = set()
    for r in rows:
        if r["type"] == "audio":
            with wave.open(str(reg.assets_root / r["path"])) as wav:
                lengths.add(wav.getnframes())
    assert len(lengths) == len(demo._SOUNDS)


def test_demo_models_folder_is_a_library_root_registered_in_place_with_one_duplicate(tmp_path):
    root = tmp_path / "demo"
    demo.seed(root, quiet=True)
    ws = workspace(root)
    reg = AssetRegistry(project_id="default", ws=ws)
    models = [r for r in reg.iter_assets() if r["path"].startswith("@library/")]
    assert sorted(r["meta"]["title"] for r in models) == sorted(m[2] for m in demo._MODELS)
    for rec in models:  # in place: the file is the one in the models folder, nothing was copied
        assert Path(rec["abs_path"]).is_relative_to(root / demo.MODELS_FOLDER) and Path(rec["abs_path"]).is_file()
        assert rec["license"]
    [group] = duplicate_report(reg)["groups"]
    assert sorted(p["rel"] for p in group["paths"]) == sorted(demo.DUPLICATE_MODEL)


def test_demo_queue_holds_the_incoming_files_and_the_enforcer_fix_repairs_its_findings(tmp_path):
    seeded = demo.seed(tmp_path / "demo", quiet=True)
    ws = workspace(tmp_path / "demo")
    queue = AssetIngestQueue(ws)
    jobs = [queue.get(j) for j in seeded["staged"]]
    assert [j["status"] for j in jobs] == ["staged", "staged"]
    assert sorted(j["source_path"].rsplit("/", 1)[-1] for j in jobs) == ["cafe_morning.png", "park_autumn.png"]
    assert queue.summary()["counts"]["staged"] == 2

    reg = AssetRegistry(project_id="default", ws=ws)
    licence_file = reg.assets_root / demo.MUSIC_FOLDER / "LICENSE.txt"
    assert "CC-BY-4.0" in licence_file.read_text(encoding="utf-8")
    before = audit_sidecars("default", workspace_root=ws.root)
    assert not before["ok"]
    assert sorted((f["kind"], f["path"]) for f in before["findings"]) == [
        ("missing_license", f"{demo.MUSIC_FOLDER}/theme_intro.wav"), ("missing_sidecar", "props/letter.png")]
    fixed = audit_sidecars("default", fix=True, fill_metadata=True, workspace_root=ws.root)
    assert fixed["ok"] and all(f["fixed"] for f in fixed["findings"])
    after = audit_sidecars("default", workspace_root=ws.root)
    assert after["ok"] and after["findings"] == []
    [theme] = [r for r in reg.iter_assets() if r["path"].endswith("theme_intro.wav")]
    assert theme["license"] == "cc-by-4.0"
