"""Path traversal and symlink escapes through every way a path reaches the server.

``source_path`` (enqueue), ``dest_relative`` (enqueue, register, uploads), upload file names,
asset paths in URLs (uid, size, project) and symlinks inside the workspace or the assets root.
Each attack must be refused with a clear 4xx JSON error (or neutralised: an upload name is
reduced to a safe base name) and nothing may be read from or written outside the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from .fuzzkit import count

SECRET_TEXT = b"TOP-SECRET outside the workspace\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A live server whose ingest may read its workspace only, plus a folder outside it."""
    from relkit import start_server

    root = tmp_path_factory.mktemp("sec-paths")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET_TEXT)
    server = start_server(root, {"features": {"enable_asset_ingest": True},
                                 "ingest": {"allowed_source_roots": ["$COMFYVN_HOME"]}})
    http = httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60)
    yield server, http, outside
    http.close()
    server.stop()


def _outside_untouched(outside: Path) -> None:
    names = sorted(p.name for p in outside.rglob("*"))
    assert names == ["secret.txt"], f"something was written outside the workspace: {names}"


def _refused(resp: httpx.Response, *codes: int) -> dict:
    assert resp.status_code in (codes or (400, 403, 404)), (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["error"] and body["message"], body
    assert SECRET_TEXT.decode().strip() not in resp.text
    return body


SOURCE_ATTACKS = {
    "absolute-outside": "{outside}/secret.txt",
    "dotdot": "{ws}/../outside/secret.txt",
    "dotdot-deep": "{ws}/sources/../../../../../../etc/passwd",
    "etc-passwd": "/etc/passwd",
    "proc-self": "/proc/self/environ",
    "home-tilde": "~/../../etc/passwd",
    "relative-dotdot": "../outside/secret.txt",
    "nul-byte": "{ws}/a\x00.png",
    "directory": "{ws}",
}


@pytest.mark.parametrize("kind", sorted(SOURCE_ATTACKS))
def test_source_path_traversal_is_refused(env, kind):
    count("attacks.path_traversal")
    server, http, outside = env
    path = SOURCE_ATTACKS[kind].format(outside=outside, ws=server.ws.root)
    _refused(http.post("api/ingest/queue", json={"source_path": path}))
    _refused(http.post("assets/register", json={"path": path, "asset_type": "images", "copy": False}))
    assert not any(server.ws.staging_dir.rglob("secret*")) if server.ws.staging_dir.exists() else True
    assert (outside / "secret.txt").read_bytes() == SECRET_TEXT  # copy=False must not have moved it
    _outside_untouched(outside)


def test_source_path_symlink_escape_is_refused(env):
    count("attacks.symlink")
    server, http, outside = env
    link = server.ws.root / "innocent.png"
    link.unlink(missing_ok=True)
    link.symlink_to(outside / "secret.txt")
    folder_link = server.ws.root / "linked-folder"
    if not folder_link.exists():
        folder_link.symlink_to(outside, target_is_directory=True)
    for path in (link, folder_link / "secret.txt"):
        body = _refused(http.post("api/ingest/queue", json={"source_path": str(path)}), 403)
        assert body["error"] == "source_not_allowed"
        _refused(http.post("assets/register", json={"path": str(path), "asset_type": "images", "copy": False}), 403)
    assert (outside / "secret.txt").read_bytes() == SECRET_TEXT
    _outside_untouched(outside)


DEST_ATTACKS = ["../../escape.bin", "/abs/escape.bin", "a/../../escape.bin", "..\\..\\escape.bin",
                "C:\\escape.bin", "ok/\x00/escape.bin", "..", "./../escape.bin", "x.bin.asset.json"]


def _confined(server, rec: dict) -> None:
    path = Path(rec.get("abs_path") or rec.get("staging_path") or "")
    assert path.resolve().is_relative_to(server.ws.root.resolve()), rec


@pytest.mark.parametrize("dest", DEST_ATTACKS)
def test_dest_relative_traversal_is_refused(env, dest):
    count("attacks.path_traversal")
    server, http, outside = env
    src = server.ws.root / "dest-src.bin"
    src.write_bytes(b"dest relative attack " + dest.encode("utf-8", "replace"))
    resp = http.post("api/ingest/queue", json={"source_path": str(src), "dest_relative": dest})
    if resp.status_code in (200, 201):  # accepted at enqueue: apply must refuse it, clearly
        job = resp.json()
        out = http.post("api/ingest/apply", json={"job_ids": [job["job_id"]]}).json()
        assert [j["job_id"] for j in out["failed"]] == [job["job_id"]], out
        assert "dest_relative" in out["failed"][0]["error"], out["failed"][0]["error"]
        http.post("api/ingest/release", json={"job_id": job["job_id"]})
    else:
        _refused(resp, 400)
    _refused(http.post("assets/register", json={"path": str(src), "asset_type": "misc", "dest_relative": dest}), 400)
    resp = http.post("assets/upload", params={"filename": "u.bin", "asset_type": "misc", "dest_relative": dest},
                     content=b"upload dest attack " + dest.encode("utf-8", "replace"))
    if resp.status_code in (200, 201):  # Tornado turns control characters in query values into spaces
        _confined(server, resp.json())
    else:
        _refused(resp, 400)
    assert not list(server.ws.root.parent.glob("escape*")) and not list(server.ws.data_dir.glob("escape*"))
    _outside_untouched(outside)


def test_dest_relative_through_a_symlinked_folder_is_refused(env):
    """A folder inside the assets root that is a symlink to elsewhere: apply must not write through it."""
    count("attacks.symlink")
    server, http, outside = env
    assets = server.ws.assets_root / "default"
    assets.mkdir(parents=True, exist_ok=True)
    trap = assets / "trap"
    if not trap.exists():
        trap.symlink_to(outside, target_is_directory=True)
    src = server.ws.root / "via-symlink.bin"
    src.write_bytes(b"written through a symlinked folder?")
    resp = http.post("api/ingest/queue", json={"source_path": str(src), "dest_relative": "trap/evil.bin"})
    if resp.status_code in (200, 201):  # refused at apply time instead
        job = resp.json()
        out = http.post("api/ingest/apply", json={"job_ids": [job["job_id"]]}).json()
        assert [j["job_id"] for j in out["failed"]] == [job["job_id"]], out
        assert "escapes" in out["failed"][0]["error"] or "symlink" in out["failed"][0]["error"]
    else:
        _refused(resp, 400)
    _refused(http.post("assets/register", json={"path": str(src), "asset_type": "misc",
                                                "dest_relative": "trap/evil2.bin"}), 400)
    _outside_untouched(outside)


UPLOAD_NAMES = ["../../escape.bin", "..\\..\\escape.bin", "/etc/escape.bin", "....//escape.bin",
                "%2e%2e%2fescape.bin", "a/b/../../../escape.bin", ".bashrc", "con.bin\x00.png", "\u202eexe.bin"]


@pytest.mark.parametrize("name", UPLOAD_NAMES)
@pytest.mark.parametrize("route", ["api/ingest/upload", "assets/upload"])
def test_upload_names_cannot_leave_the_upload_folder(env, name, route):
    count("attacks.upload_name")
    server, http, outside = env
    data = f"upload {route} {name}".encode()
    resp = http.post(route, params={"filename": name, "asset_type": "misc"}, content=data)
    if resp.status_code >= 400:
        _refused(resp, 400, 409)  # 409: an earlier upload reduced to the same safe name holds other bytes
    else:
        rec = resp.json()
        stored = Path(rec.get("staging_path") or rec.get("abs_path") or "")
        assert "/" not in (rec.get("filename") or stored.name) and ".." not in stored.name, rec
        assert stored.resolve().is_relative_to(server.ws.root.resolve()), rec
    assert not list(server.ws.root.parent.rglob("escape.bin*")) or all(
        p.resolve().is_relative_to(server.ws.root.resolve()) for p in server.ws.root.parent.rglob("escape.bin*"))
    _outside_untouched(outside)


URL_ATTACKS = [
    "assets/..%2F..%2F..%2Fetc%2Fpasswd",
    "assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd/download",
    "assets/..%252f..%252fetc%252fpasswd/sidecar",
    "assets/0123456789abcdef/download?project=..%2F..%2Foutside",
    "assets/0123456789abcdef/thumbnail?size=..%2F..%2F..%2Foutside%2Fsecret.txt",
    "assets?project=../../outside",
    "api/ingest/jobs/..%2F..%2Fetc%2Fpasswd",
    "api/modder/hooks/webhooks/..%2F..%2Fetc%2Fpasswd/deliveries",
]


@pytest.mark.parametrize("url", URL_ATTACKS)
def test_asset_paths_in_urls_cannot_reach_files(env, url):
    count("attacks.path_traversal")
    server, http, outside = env
    resp = http.get(url)
    _refused(resp)
    assert b"root:x:0:0" not in resp.content


def test_download_of_an_asset_swapped_for_a_symlink_is_refused(env):
    """Someone with disk access replaces a registered file by a symlink to a secret: the download
    route must not serve the secret."""
    count("attacks.symlink")
    server, http, outside = env
    src = server.ws.root / "swap.bin"
    src.write_bytes(b"the original asset bytes")
    rec = http.post("assets/register", json={"path": str(src), "asset_type": "misc"})
    assert rec.status_code in (200, 201), rec.text
    path = Path(rec.json()["abs_path"])
    path.unlink()
    os.symlink(outside / "secret.txt", path)
    resp = http.get(f"assets/{rec.json()['uid']}/download")
    assert SECRET_TEXT not in resp.content, "the download followed a symlink out of the assets root"
    assert resp.status_code in (400, 403, 404, 409, 410), (resp.status_code, resp.text[:200])
    assert resp.json()["message"]


def test_rebuild_does_not_register_symlinks_out_of_the_assets_root(env):
    count("attacks.symlink")
    server, _, outside = env
    from comfyvn.registry.rebuild import rebuild_from_disk
    from comfyvn.studio.core.asset_registry import AssetRegistry

    assets = server.ws.assets_root / "default" / "loot"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "secret-link.txt").unlink(missing_ok=True)
    (assets / "secret-link.txt").symlink_to(outside / "secret.txt")
    reg = AssetRegistry(ws=server.ws, make_thumbnails=False, recover=False)
    rebuild_from_disk(reg, dry_run=False)
    assert all("secret-link" not in a["path"] for a in reg.iter_assets())
