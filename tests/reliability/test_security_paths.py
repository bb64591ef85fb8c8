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


# ---------------------------------------------------------------------------- the source policy (comfyvn.sources)
def _internal_files(server) -> dict[str, Path]:
    ws = server.ws
    logs = sorted(p for p in ws.logs_dir.rglob("*") if p.is_file()) or [ws.logs_dir / "server.log"]
    if not logs[0].exists():
        logs[0].write_bytes(b"log line\n")
    cache = ws.cache_dir / "probe.bin"
    cache.write_bytes(b"cache probe")
    trash = ws.trash_dir / "default" / "20260101T000000_0123456789abcdef" / "old.txt"
    trash.parent.mkdir(parents=True, exist_ok=True)
    trash.write_bytes(b"in the trash")
    staging = ws.staging_dir / "0123456789ab-staged.png"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(b"staged by a job")
    upload = ws.data_dir / "uploads" / ".upload-probe" / "u.png"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"an upload in flight")
    return {"db": ws.db_path, "db-wal": Path(str(ws.db_path) + "-wal"), "db-shm": Path(str(ws.db_path) + "-shm"),
            "config": ws.config_file, "log": logs[0], "cache": cache, "trash": trash, "staging": staging,
            "upload": upload}


@pytest.mark.parametrize("copy", [False, True])
def test_the_workspace_internals_cannot_be_registered_or_queued(env, copy):
    """Registering the live database with copy=false moved it into the assets folder (the workspace
    was empty after a restart); its -wal leaked a webhook secret through register + download."""
    count("attacks.source_internals")
    server, http, _ = env
    db_inode = server.ws.db_path.stat().st_ino
    for name, path in _internal_files(server).items():
        assert path.exists(), name
        before = path.read_bytes() if name not in ("db", "db-wal", "db-shm") else None
        body = _refused(http.post("assets/register", json={"path": str(path), "asset_type": "misc", "copy": copy}),
                        403)
        assert body["error"] == "source_refused", (name, body)
        if name != "upload":  # an upload's body is the ingest upload route's own hand-off (see docs)
            body = _refused(http.post("api/ingest/queue", json={"source_path": str(path)}), 403)
            assert body["error"] == "source_refused", (name, body)
        assert path.exists(), f"{name} was moved"
        if before is not None:
            assert path.read_bytes() == before, name
    assert server.ws.db_path.stat().st_ino == db_inode  # the live database never left its place
    assert http.get("assets").status_code == 200  # and keeps working
    ok = server.ws.root / "incoming" / f"after-internals-{copy}.bin"
    ok.parent.mkdir(exist_ok=True)
    ok.write_bytes(b"a normal file after the attacks " + str(copy).encode())
    assert http.post("assets/register", json={"path": str(ok), "asset_type": "misc"}).status_code == 201


def test_another_projects_asset_cannot_be_registered(env):
    count("attacks.source_internals")
    server, http, _ = env
    src = server.ws.root / "incoming" / "theirs.bin"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(b"belongs to project other")
    theirs = http.post("assets/register", params={"project": "other"}, json={"path": str(src), "asset_type": "misc"})
    assert theirs.status_code in (200, 201), theirs.text
    path = theirs.json()["abs_path"]
    for copy in (True, False):
        body = _refused(http.post("assets/register", json={"path": path, "asset_type": "misc", "copy": copy}), 403)
        assert body["error"] == "source_refused"
    _refused(http.post("api/ingest/queue", json={"source_path": path}), 403)
    assert Path(path).read_bytes() == b"belongs to project other"


@pytest.mark.parametrize("name", [".ssh/id_rsa", ".aws/credentials", ".env", "keys/server.pem", "keys/tls.key",
                                  "deploy/id_ed25519", ".git/config", "gcloud/credentials.json"])
def test_secrets_under_an_allowed_root_cannot_be_registered(env, name):
    count("attacks.source_secret")
    server, http, _ = env
    path = server.ws.root / "home-like" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"-----BEGIN PRIVATE KEY----- " + name.encode())
    for copy in (True, False):
        body = _refused(http.post("assets/register", json={"path": str(path), "asset_type": "misc", "copy": copy}),
                        403)
        assert body["error"] == "source_refused" and b"PRIVATE KEY" not in http.get("assets").content
    _refused(http.post("api/ingest/queue", json={"source_path": str(path)}), 403)
    assert path.exists()


SOURCE_ROUTES = {("assets/register", "path"): {"asset_type": "misc"}, ("api/ingest/queue", "source_path"): {}}


def test_endless_and_blocking_sources_are_refused_at_once(env):
    """A FIFO hung every worker thread (and every route with them); /dev/zero streamed forever."""
    count("attacks.source_special")
    server, http, _ = env
    folder = server.ws.root / "special"
    folder.mkdir(exist_ok=True)
    fifo = folder / "pipe.png"
    if not fifo.exists():
        os.mkfifo(fifo)
    zero = folder / "zero.bin"
    if not zero.is_symlink():
        zero.symlink_to("/dev/zero")
    short = httpx.Client(base_url=str(http.base_url), headers=http.headers, timeout=15)
    try:
        for route, key in SOURCE_ROUTES:
            body = _refused(short.post(route, json={key: str(fifo), **SOURCE_ROUTES[route, key]}), 400)
            assert body["error"] == "not_a_file" and "FIFO" in body["message"]
            _refused(short.post(route, json={key: str(zero), **SOURCE_ROUTES[route, key]}), 400, 403)
    finally:
        short.close()
    assert http.get("assets").status_code == 200  # no worker thread is stuck


def test_symlink_loops_and_overlong_names_are_4xx_not_500(env):
    count("attacks.source_special")
    server, http, _ = env
    a, b = server.ws.root / "loop-a.png", server.ws.root / "loop-b.png"
    if not a.is_symlink():
        a.symlink_to(b)
        b.symlink_to(a)
    for path in (str(a), str(server.ws.root / ("n" * 4000 + ".png"))):
        for route, key in SOURCE_ROUTES:
            body = _refused(http.post(route, json={key: path, **SOURCE_ROUTES[route, key]}), 400)
            assert body["error"] == "bad_source_path", body


def test_copy_false_never_moves_a_file_into_the_assets_root(env):
    """copy=false registers a file of the assets root where it lies; anything else needs copy=true."""
    count("attacks.source_move")
    server, http, _ = env
    src = server.ws.root / "incoming" / "stay-here.png"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(b"do not move me")
    body = _refused(http.post("assets/register", json={"path": str(src), "asset_type": "images", "copy": False}), 400)
    assert body["error"] == "copy_required" and "copy=true" in body["message"]
    assert src.read_bytes() == b"do not move me"
    placed = server.ws.assets_root / "default" / "art" / "in-place.png"
    placed.parent.mkdir(parents=True, exist_ok=True)
    placed.write_bytes(b"already in the assets root")
    inode = placed.stat().st_ino
    resp = http.post("assets/register", json={"path": str(placed), "asset_type": "images", "copy": False})
    assert resp.status_code == 201 and resp.json()["path"] == "art/in-place.png", resp.text
    assert placed.stat().st_ino == inode  # registered in place, not moved or rewritten


@pytest.mark.parametrize("dest", [".incoming/x.bin", ".ssh/authorized_keys", "a/.hidden.bin"])
def test_hidden_destinations_are_refused(env, dest):
    count("attacks.path_traversal")
    server, http, _ = env
    src = server.ws.root / "incoming" / "hidden-dest.bin"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(b"hidden dest " + dest.encode())
    body = _refused(http.post("assets/register", json={"path": str(src), "asset_type": "misc",
                                                       "dest_relative": dest}), 400)
    assert body["error"] == "unsafe_path" and "hidden" in body["message"]
    assert not list((server.ws.assets_root / "default").rglob("hidden-dest.bin"))


@pytest.mark.parametrize("project", ["/", "..", "../..", ".", "default/..", "a/b", ".hidden", "x" * 65])
def test_a_project_id_cannot_widen_the_source_policy(env, project):
    """A ``project_id`` names a folder: ``/`` or ``../..`` once made any file 'the caller's own
    assets' (skipping the allowed roots and the secret names) and left jobs stuck in applying."""
    count("attacks.source_internals")
    server, http, outside = env
    before = http.get("api/ingest/jobs", params={"limit": 500}).json()["items"]
    for source in (str(outside / "secret.txt"), "/etc/passwd", str(server.ws.root / "config" / "comfyvn.json")):
        body = _refused(http.post("api/ingest/queue", json={"source_path": source, "project_id": project}), 400)
        assert "project_id" in body["message"]
    _refused(http.post("api/ingest/upload", params={"filename": "x.png", "project_id": project},
                       content=b"x"), 400)
    assert http.get("api/ingest/jobs", params={"limit": 500}).json()["items"] == before  # no job made
    assert http.get("api/ingest/status").status_code == 200
    _outside_untouched(outside)


def test_deceptive_overlong_and_through_a_file_destinations_are_400_not_500(env):
    count("attacks.dest_relative")
    server, http, outside = env
    src = server.ws.root / "incoming" / "dest-probe.png"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(b"dest probe " + os.urandom(8))
    first = http.post("assets/register", json={"path": str(src), "asset_type": "images",
                                                "dest_relative": "images/rgba.png"})
    assert first.status_code in (200, 201), first.text
    other = server.ws.root / "incoming" / "dest-probe-2.png"
    other.write_bytes(b"another " + os.urandom(8))
    for dest in ("images/\u202egnp.exe", "images/\u200b/x.png", "images/" + "n" * 300 + ".png",
                 "images/rgba.png/x.png"):  # bidi override, zero-width space, over 255 bytes, a file as a folder
        body = _refused(http.post("assets/register", json={"path": str(other), "asset_type": "images",
                                                           "dest_relative": dest}), 400)
        assert body["error"] == "unsafe_path", body
        if not dest.endswith("rgba.png/x.png"):  # the queue does not look into the assets tree: apply says so
            _refused(http.post("api/ingest/queue", json={"source_path": str(other), "dest_relative": dest}), 400)
    _outside_untouched(outside)
