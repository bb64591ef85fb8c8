"""Assets on shared storage: ``paths.assets_root``, ``paths.staging`` and ``paths.thumbnails``
(issue 18, point 3) read by the workspace, validated, checked before anything is written."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from comfyvn.config import ConfigError, check_storage_paths, init_workspace, update_config, workspace
from comfyvn.ingest import AssetIngestQueue
from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.syscheck import check_paths, run_profile


def shared_folders(base: Path) -> dict[str, Path]:
    folders = {"assets_root": base / "assets", "staging": base / "staging", "thumbnails": base / "thumbs"}
    for folder in folders.values():
        folder.mkdir(parents=True)
    return folders


def test_unset_paths_keep_the_workspace_defaults(ws):
    assert ws.assets_root == ws.root / "data" / "assets"
    assert ws.staging_dir == ws.root / "data" / "ingest" / "staging"
    assert ws.thumbnails_dir == ws.root / "cache" / "thumbnails"
    assert json.loads(ws.config_file.read_text())["paths"] == {"assets_root": None, "staging": None,
                                                               "thumbnails": None}


def test_absolute_and_relative_paths_are_read_by_the_workspace(ws, tmp_path):
    shared = shared_folders(tmp_path / "share")
    (ws.root / "local-thumbs").mkdir()
    update_config({"paths": {"assets_root": str(shared["assets_root"]), "staging": str(shared["staging"]),
                             "thumbnails": "local-thumbs"}}, ws)
    assert ws.assets_root == shared["assets_root"]
    assert ws.staging_dir == shared["staging"]
    assert ws.thumbnails_dir == ws.root / "local-thumbs"  # relative: taken from the workspace root
    update_config({"paths": {"thumbnails": "../share/thumbs"}}, ws)
    assert ws.thumbnails_dir == shared["thumbnails"]


def test_registry_and_queue_write_into_the_configured_folders(ws, tmp_path):
    shared = shared_folders(tmp_path / "share")
    update_config({"paths": {k: str(v) for k, v in shared.items()}}, ws)
    queue = AssetIngestQueue(ws)
    try:
        src = ws.root / "incoming" / "hero.png"
        src.parent.mkdir()
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 10, 10)).save(src)
        job = queue.enqueue(source_path=src)
        assert Path(job["staging_path"]).parent == shared["staging"]
        [applied] = queue.apply([job["job_id"]])["applied"]
        reg = queue.registry()
        asset = reg.get_asset(applied["asset_uid"])
        assert Path(asset["abs_path"]).is_file()
        assert Path(asset["abs_path"]).is_relative_to(shared["assets_root"] / "default")
        assert not (ws.root / "data" / "assets" / "default" / asset["path"]).exists()
        AssetRegistry.wait_for_thumbnails(30)
        thumbs = sorted(p.name for p in (shared["thumbnails"] / "default").rglob("*") if p.is_file())
        assert thumbs and not (ws.root / "cache" / "thumbnails" / "default").exists()
    finally:
        queue.stop_worker()


@pytest.mark.parametrize(("paths", "message"), [
    ({"assets_root": 5}, "paths.assets_root must be a folder path"),
    ({"staging": ""}, "paths.staging must be a folder path"),
    ({"thumbnails": {"render-01": ["x"]}}, "paths.thumbnails.render-01 must be a folder path"),
    ({"assets_root": {}}, "paths.assets_root names no server"),
    ({"asset_root": "/srv/x"}, "paths.asset_root is not a setting"),
    ("/srv/x", "'paths' must be an object"),
])
def test_a_malformed_paths_setting_is_a_clear_config_error(ws, paths, message):
    with pytest.raises(ConfigError, match=message):
        update_config({"paths": paths}, ws)
    raw = json.loads(ws.config_file.read_text())
    raw["paths"] = paths
    ws.config_file.write_text(json.dumps(raw))  # a hand edit is refused when read
    with pytest.raises(ConfigError, match=message):
        _ = ws.assets_root


def test_a_path_per_server_where_mount_points_differ(ws, tmp_path, monkeypatch):
    shared = shared_folders(tmp_path / "nas")
    (tmp_path / "mnt").mkdir()
    os.symlink(tmp_path / "nas", tmp_path / "mnt" / "studio")  # the same share, mounted elsewhere
    update_config({"paths": {"assets_root": {"render-01": str(tmp_path / "mnt" / "studio" / "assets"),
                                             "*": str(shared["assets_root"])}}}, ws)
    monkeypatch.setenv("COMFYVN_SERVER_NAME", "render-01")
    assert ws.assets_root == tmp_path / "mnt" / "studio" / "assets"
    monkeypatch.setenv("COMFYVN_SERVER_NAME", "artist-7")
    assert ws.assets_root == shared["assets_root"]
    raw = json.loads(ws.config_file.read_text())
    raw["paths"]["assets_root"] = {"render-01": str(shared["assets_root"])}  # no "*" entry
    ws.config_file.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="paths.assets_root has no entry for this server 'artist-7'"):
        _ = ws.assets_root


def test_registered_paths_stay_valid_on_a_server_that_mounts_the_share_elsewhere(ws, tmp_path, monkeypatch):
    """The database keeps paths relative to the assets root: server B finds A's file at B's mount point."""
    shared = shared_folders(tmp_path / "nas")
    (tmp_path / "mnt").mkdir()
    os.symlink(tmp_path / "nas", tmp_path / "mnt" / "studio")
    update_config({"paths": {"assets_root": {"a": str(shared["assets_root"]),
                                             "b": str(tmp_path / "mnt" / "studio" / "assets")},
                             "staging": {"a": str(shared["staging"]),
                                         "b": str(tmp_path / "mnt" / "studio" / "staging")}}}, ws)
    src = ws.root / "incoming" / "song.ogg"
    src.parent.mkdir()
    src.write_bytes(b"OggS" + os.urandom(2000))
    monkeypatch.setenv("COMFYVN_SERVER_NAME", "a")
    on_a = AssetRegistry(ws=ws, make_thumbnails=False).register_file(src, "music", copy=True)
    assert on_a["abs_path"].startswith(str(shared["assets_root"]))
    monkeypatch.setenv("COMFYVN_SERVER_NAME", "b")
    reg_b = AssetRegistry(ws=ws, make_thumbnails=False, recover=False)
    on_b = reg_b.get_asset(on_a["uid"])
    assert on_b["path"] == on_a["path"]
    assert on_b["abs_path"] == str(tmp_path / "mnt" / "studio" / "assets" / "default" / on_a["path"])
    assert reg_b.resolve_path(on_a["uid"]).read_bytes() == src.read_bytes()


def test_a_configured_folder_that_does_not_exist_is_refused_and_never_created(ws, tmp_path):
    missing = tmp_path / "unmounted" / "assets"
    update_config({"paths": {"assets_root": str(missing)}}, ws)
    with pytest.raises(ConfigError, match=r"paths.assets_root .*unmounted/assets does not exist"):
        AssetRegistry(ws=ws)
    with pytest.raises(ConfigError, match="does not exist"):
        AssetIngestQueue(ws)
    assert not missing.exists() and not missing.parent.exists()
    init_workspace(workspace(ws.root))  # opening the workspace (a server starting) still works


def test_staging_and_assets_root_on_different_file_systems_are_refused(ws, tmp_path):
    other_fs = Path(tempfile.mkdtemp(prefix="comfyvn-staging-", dir="/dev/shm"))  # tmpfs
    try:
        assert os.stat(other_fs).st_dev != os.stat(tmp_path).st_dev
        assets = tmp_path / "assets"
        assets.mkdir()
        update_config({"paths": {"assets_root": str(assets), "staging": str(other_fs)}}, ws)
        with pytest.raises(ConfigError, match="on different file systems"):
            check_storage_paths(ws)
        with pytest.raises(ConfigError, match="on different file systems"):
            AssetIngestQueue(ws)
        report = check_paths(ws)
        assert not report.ok and "different file systems" in report.detail
        update_config({"paths": {"staging": str(tmp_path / "assets-staging")}}, ws)
        (tmp_path / "assets-staging").mkdir()
        check_storage_paths(ws)
    finally:
        shutil.rmtree(other_fs, ignore_errors=True)


def test_syscheck_reports_the_storage_folders(ws, tmp_path):
    shared = shared_folders(tmp_path / "share")
    update_config({"paths": {k: str(v) for k, v in shared.items()}}, ws)
    report = check_paths(ws)
    assert report.ok, report.detail
    assert str(shared["assets_root"]) in report.detail and "one file system" in report.detail
    shutil.rmtree(shared["thumbnails"])
    report = check_paths(ws)
    assert not report.ok and "paths.thumbnails" in report.detail


def test_the_system_check_of_a_workspace_reports_its_storage_folders(ws, tmp_path):
    update_config({"paths": {"thumbnails": str(tmp_path / "not-mounted")}}, ws)
    report = run_profile("asset_gallery", "http://127.0.0.1:9/", workspace_root=ws.root, timeout=2)
    [check] = [c for c in report["checks"] if c["name"] == "storage folders"]
    assert not check["ok"] and "paths.thumbnails" in check["detail"] and not report["ok"]
