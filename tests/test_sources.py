"""The source policy (comfyvn.sources): which caller-named files may be read, opened once and safely.

Every refusal is checked through the two ways a caller names a source in the core library,
ingest ``enqueue(source_path=...)`` and ``AssetRegistry.register_file`` (plain Python, and
behind ``check_source`` as the HTTP route does), and nothing may be staged, copied or moved.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from comfyvn_server_ext.handlers.base import error_row

import comfyvn.sources as sources
from comfyvn.config import init_workspace, update_config, workspace
from comfyvn.fsutil import UnsafePathError
from comfyvn.ingest import AssetIngestQueue, IngestError
from comfyvn.sources import (
    CopyRequiredError,
    SourceChangedError,
    SourceNotAllowedError,
    SourceNotRegularError,
    SourcePathError,
    SourceRefusedError,
    SourceTooLargeError,
)
from comfyvn.studio.core.asset_registry import AssetRegistry

SECRET = b"TOP SECRET: must never be copied\n"


def write(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()


@pytest.fixture
def reg(ws):
    return AssetRegistry(ws=ws, make_thumbnails=False)


def leftovers(ws) -> list[str]:
    """Anything staged or half-copied (staging folder, the registry's incoming folder)."""
    found = [p.name for p in ws.staging_dir.iterdir()] if ws.staging_dir.exists() else []
    incoming = ws.assets_root / "default" / ".incoming"
    return found + ([p.name for p in incoming.iterdir()] if incoming.exists() else [])


def refused_everywhere(q, reg, path: Path, error: type[Exception]) -> None:
    """enqueue, register (copy and in place, plain and through check_source) all refuse ``path``."""
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(error):
        q.enqueue(source_path=path)
    with pytest.raises(error):
        reg.register_file(path, "misc")
    with pytest.raises(error):
        reg.register_file(path, "misc", copy=False)
    with pytest.raises(error):
        reg.register_file(q.check_source(path), "misc", copy=False)
    if before is not None:
        assert path.read_bytes() == before  # still where it was, unchanged
    assert leftovers(q.ws) == []
    assert q.list_jobs() == [] and reg.count() == 0


# ---------------------------------------------------------------------------- the workspace's own files
def test_the_database_and_its_journal_files_are_never_sources(ws, q, reg):
    db = ws.db_path
    inode = db.stat().st_ino
    wal = Path(str(db) + "-wal")
    assert wal.exists()  # the queue holds the database open in WAL mode
    for path in (db, wal, Path(str(db) + "-shm")):
        refused_everywhere(q, reg, path, SourceRefusedError)
    assert db.stat().st_ino == inode  # never moved
    ok = q.enqueue(source_path=write(ws.root / "incoming" / "fine.png", b"fine"))  # the database still works
    assert ok["status"] == "staged" and q.get(ok["job_id"])["status"] == "staged"


def test_a_hard_link_to_the_database_is_refused_by_identity(ws, q, reg):
    link = ws.root / "incoming" / "innocent.bin"
    link.parent.mkdir()
    os.link(ws.db_path, link)
    refused_everywhere(q, reg, link, SourceRefusedError)


def test_a_hard_link_to_the_webhook_secrets_key_is_refused_by_identity(ws, q, reg):
    key = write(ws.config_file.parent / "secrets.key", os.urandom(32))  # what sealing webhook secrets creates
    link = ws.root / "incoming" / "key.png"
    link.parent.mkdir()
    os.link(key, link)
    refused_everywhere(q, reg, link, SourceRefusedError)


def test_another_workspaces_own_files_are_refused(ws, q, reg, tmp_path, monkeypatch):

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    old = init_workspace(workspace(home / "oldws"))
    update_config({"ingest": {"allowed_source_roots": ["$COMFYVN_HOME", "~"]}}, ws)
    for path in (old.config_file, write(old.db_path, b"SQLite format 3\x00"),
                 write(old.assets_root / "default" / "art.png", b"theirs"), write(old.logs_dir / "server.log", b"l")):
        refused_everywhere(q, reg, path, SourceRefusedError)
    fine = write(home / "oldws" / "incoming" / "drop.png", b"a file dropped beside a workspace")
    assert q.enqueue(source_path=str(fine))["status"] == "staged"  # only its internals are refused


def test_config_logs_cache_staging_trash_and_uploads_are_never_sources(ws, q, reg):
    staged = q.enqueue(source_path=write(ws.root / "incoming" / "s.png", b"staged bytes"))
    staging = Path(staged["staging_path"])
    gone = reg.register_file(write(ws.root / "incoming" / "t.txt", b"to the trash"), "docs")
    trashed = next(Path(reg.remove_asset_record(gone["uid"])["trashed_to"]).glob("t.txt"))
    paths = [ws.config_file, write(ws.logs_dir / "server.log", b"log"), write(ws.cache_dir / "c.bin", b"cache"),
             staging, trashed, write(ws.data_dir / "uploads" / ".upload-abc" / "u.png", b"upload body"),
             ws.queue_state_file if ws.queue_state_file.exists() else write(ws.data_dir / "ingest" / "x.json")]
    jobs_before = q.list_jobs()
    for path in paths:
        before = path.read_bytes()
        calls = [lambda p: reg.register_file(p, "misc"), lambda p: reg.register_file(q.check_source(p), "misc",
                                                                                      copy=False), q.check_source]
        if path not in (staging, paths[5]):  # hand-offs: Python code (ingest apply, uploads) may move them
            calls.append(lambda p: reg.register_file(p, "misc", copy=False))
        if path != paths[5]:  # an upload's body is the ingest upload route's hand-off to enqueue
            calls.append(lambda p: q.enqueue(source_path=p))
        for call in calls:
            with pytest.raises(SourceRefusedError) as err:
                call(path)
            assert error_row(err.value).status == 403 and err.value.code == "source_refused"
        assert path.read_bytes() == before
    assert q.list_jobs() == jobs_before and reg.count() == 0


def test_another_projects_assets_are_never_sources(ws, q):
    other = AssetRegistry("other", ws=ws, make_thumbnails=False)
    theirs = other.register_file(write(ws.root / "incoming" / "theirs.txt", b"their asset"), "docs")
    path = Path(theirs["abs_path"])
    mine = AssetRegistry("default", ws=ws, make_thumbnails=False)
    for call in (lambda: q.enqueue(source_path=path), lambda: mine.register_file(path, "docs"),
                 lambda: mine.register_file(path, "docs", copy=False)):
        with pytest.raises(SourceRefusedError):
            call()
    assert path.read_bytes() == b"their asset" and mine.count() == 0
    assert other.get_asset(theirs["uid"])["path"] == theirs["path"]


def test_the_file_of_another_asset_is_not_registered_again(ws, reg):
    rec = reg.register_file(write(ws.root / "incoming" / "a.txt", b"version 1"), "docs")
    path = Path(rec["abs_path"])
    path.write_bytes(b"edited by hand")  # now other bytes than asset rec['uid'] holds
    for copy in (True, False):
        with pytest.raises(SourceRefusedError, match=rec["uid"]):
            reg.register_file(path, "docs", copy=copy, dest_relative=None if not copy else "docs/b.txt")
    assert reg.count() == 1 and path.read_bytes() == b"edited by hand"


# ---------------------------------------------------------------------------- sensitive names
def test_keys_credentials_and_dot_folders_under_home_are_refused(ws, q, reg, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    secrets = [write(home / ".ssh" / "id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY-----"),
               write(home / ".aws" / "credentials", b"aws_secret_access_key=x"),
               write(home / ".gnupg" / "pubring.kbx", b"keys"), write(home / ".netrc", b"machine x password y"),
               write(home / ".env", b"TOKEN=1"), write(home / "work" / ".git" / "config", b"[remote]"),
               write(home / "certs" / "server.pem", b"key"), write(home / "certs" / "tls.key", b"key"),
               write(home / "deploy" / "id_ed25519", b"key"), write(home / "gcloud" / "credentials.json", b"{}")]
    for path in secrets:
        refused_everywhere(q, reg, path, SourceRefusedError)
    fine = write(home / "art" / "hero.png", b"a picture")
    assert q.enqueue(source_path=fine)["status"] == "staged"
    assert reg.register_file(q.check_source(fine), "images")["path"] == "images/hero.png"


def test_an_explicitly_allowed_dot_root_is_readable_but_key_names_are_not(ws, q, tmp_path):
    art = tmp_path / ".art"
    update_config({"ingest": {"allowed_source_roots": [str(art)]}}, ws)
    assert q.enqueue(source_path=write(art / "a.png", b"a"))["status"] == "staged"
    with pytest.raises(SourceRefusedError):
        q.enqueue(source_path=write(art / "id_rsa", b"k"))


# ---------------------------------------------------------------------------- what is opened
def run_with_timeout(fn, seconds: float = 20.0):
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading the source hung"
    return out


def test_a_fifo_is_refused_without_hanging(ws, q, reg):
    fifo = ws.root / "incoming" / "pipe.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    for call in (lambda: q.enqueue(source_path=fifo), lambda: reg.register_file(fifo, "images"),
                 lambda: reg.register_file(q.check_source(fifo), "images")):
        out = run_with_timeout(call)
        assert isinstance(out.get("error"), SourceNotRegularError), out
        assert "FIFO" in str(out["error"]) or "not a regular file" in str(out["error"])
    assert leftovers(ws) == []


def test_devices_and_folders_are_refused(ws, q, reg):
    update_config({"ingest": {"allowed_source_roots": ["$COMFYVN_HOME", "/dev"]}}, ws)
    for path in (Path("/dev/zero"), Path("/dev/null"), ws.root):
        out = run_with_timeout(lambda p=path: q.enqueue(source_path=p))
        assert isinstance(out.get("error"), SourceNotRegularError), out
        out = run_with_timeout(lambda p=path: reg.register_file(p, "misc"))
        assert isinstance(out.get("error"), SourceNotRegularError), out
    assert leftovers(ws) == [] and q.list_jobs() == []


def test_a_sparse_file_over_the_cap_is_refused_before_any_copy(ws, q, reg):
    update_config({"ingest": {"max_source_bytes": 1024 * 1024}}, ws)
    sparse = ws.root / "incoming" / "huge.safetensors"
    sparse.parent.mkdir()
    with open(sparse, "wb") as fh:
        fh.truncate(1024**4)  # 1 TiB, no block allocated
    for call in (lambda: q.enqueue(source_path=sparse), lambda: reg.register_file(sparse, "models"),
                 lambda: reg.register_file(sparse, "models", copy=False)):
        out = run_with_timeout(call, 10)
        assert isinstance(out.get("error"), SourceTooLargeError), out
        assert error_row(out["error"]).status == 400 and "max_source_bytes" in str(out["error"])
    assert leftovers(ws) == []
    assert q.enqueue(source_path=write(ws.root / "incoming" / "small.bin", b"x" * 1000))["status"] == "staged"


def test_the_default_cap_never_exceeds_the_free_disk_space(ws, q):
    free = shutil.disk_usage(ws.staging_dir).free
    assert sources.source_limit(ws, ws.staging_dir) <= free - sources.DEFAULT_MIN_FREE_BYTES
    assert sources.source_limit(ws) == sources.DEFAULT_MAX_SOURCE_BYTES == 64 * 1024**3
    sparse = ws.root / "incoming" / "bigger-than-the-disk.bin"
    sparse.parent.mkdir()
    with open(sparse, "wb") as fh:
        fh.truncate(free + 2 * 1024**3)  # sparse: over the free space, whatever the disk
    out = run_with_timeout(lambda: q.enqueue(source_path=sparse), 10)
    assert isinstance(out.get("error"), SourceTooLargeError), out
    assert leftovers(ws) == []


def test_a_file_that_grows_past_the_cap_while_copied_is_refused_and_leaves_nothing(ws, q, reg, monkeypatch):
    update_config({"ingest": {"max_source_bytes": 200_000}}, ws)
    path = write(ws.root / "incoming" / "growing.bin", os.urandom(100_000))
    real_copy = sources.copy_and_hash_fd

    def grow_then_copy(fd, dest_fh, **kw):
        with open(path, "ab") as fh:  # the file grows after fstat, while it is being read
            fh.write(os.urandom(300_000))
        return real_copy(fd, dest_fh, **kw)

    monkeypatch.setattr(sources, "copy_and_hash_fd", grow_then_copy)
    for call in (lambda: q.enqueue(source_path=path), lambda: reg.register_file(path, "misc")):
        write(path, os.urandom(100_000))
        with pytest.raises(SourceTooLargeError, match="grew"):
            call()
    assert leftovers(ws) == [] and q.list_jobs() == [] and reg.count() == 0


def test_a_symlink_loop_and_an_overlong_name_are_clear_errors(ws, q, reg):
    a, b = ws.root / "loop-a.png", ws.root / "loop-b.png"
    a.symlink_to(b)
    b.symlink_to(a)
    for path in (a, ws.root / ("x" * 5000 + ".png")):
        for call in (lambda p=path: q.enqueue(source_path=p), lambda p=path: reg.register_file(p, "misc")):
            with pytest.raises(SourcePathError) as err:
                call()
            assert error_row(err.value).status == 400 and err.value.code == "bad_source_path"


def test_a_leaf_symlink_to_a_file_inside_the_roots_still_works(ws, q, reg):
    target = write(ws.root / "incoming" / "real.png", b"the real picture")
    link = ws.root / "incoming" / "link.png"
    link.symlink_to(target)
    job = q.enqueue(source_path=link)
    assert job["status"] == "staged" and job["source_path"] == str(target.resolve())
    assert reg.register_file(q.check_source(link), "images")["hash"] == sha(b"the real picture")


# ---------------------------------------------------------------------------- check-then-use races
@pytest.fixture
def outside(tmp_path) -> Path:
    return write(tmp_path / "outside" / "secret.png", SECRET)


def swap_after_resolving(monkeypatch, swap) -> None:
    """Run ``swap(resolved)`` once, right after the source path is next resolved, before it is opened."""
    real = sources._resolve
    armed = [True]

    def resolve_then_swap(raw):
        resolved = real(raw)
        if armed.pop() if armed else False:
            swap(Path(resolved))
        return resolved

    monkeypatch.setattr(sources, "_resolve", resolve_then_swap)


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_read(ws, q, reg, outside, monkeypatch):
    path = write(ws.root / "incoming" / "swap.png", b"harmless")

    def to_symlink(resolved: Path) -> None:
        resolved.unlink()
        resolved.symlink_to(outside)

    swap_after_resolving(monkeypatch, to_symlink)
    with pytest.raises(SourceChangedError):
        q.enqueue(source_path=path)
    path.unlink()
    write(path, b"harmless")
    checked = q.check_source(path)  # as POST /assets/register: check first, register later
    swap_after_resolving(monkeypatch, to_symlink)
    with pytest.raises(SourceChangedError):
        reg.register_file(checked, "images")
    assert leftovers(ws) == [] and q.list_jobs() == [] and reg.count() == 0
    assert outside.read_bytes() == SECRET


def test_a_folder_swapped_for_a_symlink_after_the_check_is_judged_by_what_was_opened(ws, q, reg, outside,
                                                                                     monkeypatch):
    folder = ws.root / "incoming" / "batch"
    path = write(folder / "secret.png", b"harmless")

    def folder_to_symlink(resolved: Path) -> None:
        shutil.rmtree(folder)
        folder.symlink_to(outside.parent, target_is_directory=True)

    swap_after_resolving(monkeypatch, folder_to_symlink)
    with pytest.raises(SourceChangedError, match="refused"):
        q.enqueue(source_path=path)
    assert leftovers(ws) == [] and q.list_jobs() == []


def test_racing_swaps_never_copy_a_file_from_outside_the_roots(ws, q, reg, outside):
    """A thread flips a path between a harmless file and a symlink to a secret outside the roots
    while the queue and the registry (behind check_source, as the HTTP route) read it: 0 escapes."""
    path = ws.root / "incoming" / "flip.png"
    harmless, evil = ws.root / "incoming" / ".harmless", ws.root / "incoming" / ".evil"
    write(harmless, b"harmless bytes")
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            shutil.copyfile(harmless, str(path) + ".f")
            os.replace(str(path) + ".f", path)
            os.symlink(outside, str(path) + ".l")
            os.replace(str(path) + ".l", path)

    thread = threading.Thread(target=flipper, daemon=True)
    thread.start()
    tries = copied = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            tries += 1
            try:
                job = q.enqueue(source_path=path)
                copied += 1
                assert job["digest"] != sha(SECRET)
                if job["status"] == "staged":
                    assert Path(job["staging_path"]).read_bytes() != SECRET
                    q.release(job["job_id"])
            except (IngestError, FileNotFoundError):
                pass
            try:
                rec = reg.register_file(q.check_source(path), "images")
                copied += 1
                assert rec["hash"] != sha(SECRET)
            except (IngestError, FileNotFoundError):
                pass
    finally:
        stop.set()
        thread.join(5)
    assert tries > 20 and copied > 0  # the race really ran, and harmless reads still succeed
    assert all(sha(p.read_bytes()) != sha(SECRET) for p in ws.data_dir.rglob("*") if p.is_file())
    assert not evil.exists()


# ---------------------------------------------------------------------------- copy=False and destinations
def test_copy_false_outside_the_assets_root_is_refused_with_a_hint(ws, reg):
    path = write(ws.root / "incoming" / "keep.png", b"keep me")
    with pytest.raises(CopyRequiredError, match="copy=true"):
        reg.register_file(path, "images", copy=False)
    with pytest.raises(CopyRequiredError):
        reg.register_file(sources.check_source(path, ws), "images", copy=False)
    assert path.read_bytes() == b"keep me" and reg.count() == 0


def test_a_checked_source_is_never_moved_even_from_a_hand_off_folder(ws, reg, monkeypatch):
    staged = write(ws.staging_dir / "0123456789ab-x.png", b"staged")
    checked = sources.SourcePath(staged)  # as if check_source had passed it
    with pytest.raises(SourceNotAllowedError):
        reg.register_file(checked, "images", copy=False)
    assert staged.read_bytes() == b"staged"


@pytest.mark.parametrize("dest", [".incoming/x.bin", ".ssh/authorized_keys", "a/.hidden.bin", ".env", "ok/.git/"])
def test_hidden_names_are_not_valid_destinations(ws, reg, dest):
    with pytest.raises(UnsafePathError, match="hidden") as err:
        reg.register_file(write(ws.root / "incoming" / "d.bin", b"d"), "misc", dest_relative=dest)
    assert isinstance(err.value, ValueError)
    assert reg.count() == 0


def test_the_queue_delegates_its_roots_to_the_one_policy(ws, q):
    assert q.allowed_source_roots() == sources.allowed_source_roots(ws) == [ws.root, Path("~").expanduser().resolve()]
    assert isinstance(q.check_source(write(ws.root / "a.png")), sources.SourcePath)


def test_internals_are_recognised_when_the_data_folder_is_a_symlink_to_another_disk(tmp_path, monkeypatch):
    from comfyvn.config import init_workspace, workspace

    root = tmp_path / "ws"
    (tmp_path / "big-disk" / "data").mkdir(parents=True)
    root.mkdir()
    (root / "data").symlink_to(tmp_path / "big-disk" / "data", target_is_directory=True)
    monkeypatch.setenv("COMFYVN_HOME", str(root))
    ws = init_workspace(workspace(root))
    queue = AssetIngestQueue(ws)
    try:
        registry = AssetRegistry(ws=ws, make_thumbnails=False)
        trash = write(tmp_path / "big-disk" / "data" / "trash" / "default" / "x" / "old.txt", b"old")
        for path in (ws.db_path, trash):
            with pytest.raises(SourceRefusedError):
                queue.enqueue(source_path=path)
            with pytest.raises(SourceRefusedError):
                registry.register_file(path, "misc")
        job = queue.enqueue(source_path=write(root / "incoming" / "a.png", b"through the symlinked data"))
        assert queue.apply([job["job_id"]])["applied"]  # the staging hand-off still moves in
    finally:
        queue.stop_worker()


def test_an_upload_body_is_read_only_when_the_upload_route_hands_it_on(ws, q):
    body = write(ws.data_dir / "uploads" / ".upload-guessed" / "u.png", b"someone else's upload in flight")
    with pytest.raises(SourceRefusedError):
        q.enqueue(source_path=str(body))  # a caller naming it, as POST /api/ingest/queue would
    assert leftovers(ws) == []
    job = q.enqueue(source_path=str(body), handoff=True)  # the upload route's own body
    assert job["status"] == "staged" and body.exists()  # copied, never moved


@pytest.mark.parametrize("dest", [".hidden/x.png", "a/.incoming/x.png", ".x.png"])
def test_hidden_destinations_are_refused_at_enqueue(ws, q, dest):
    src = write(ws.root / "incoming" / "pic.png", b"picture")
    with pytest.raises(UnsafePathError, match="hidden name"):
        q.enqueue(source_path=str(src), dest_relative=dest)
    assert q.list_jobs() == []


def test_a_relative_source_path_means_the_workspace_folder(ws, q, tmp_path, monkeypatch):
    write(ws.root / "incoming" / "rel.png", b"in the workspace")
    write(tmp_path / "elsewhere" / "incoming" / "rel.png", b"in the working folder")
    monkeypatch.chdir(tmp_path / "elsewhere")  # a server or kernel started in another folder
    job = q.enqueue(source_path="incoming/rel.png")
    assert job["digest"] == sha(b"in the workspace") and job["source_path"] == str(ws.root / "incoming" / "rel.png")
    assert sources.check_source("incoming/rel.png", ws) == ws.root / "incoming" / "rel.png"


def test_a_bad_project_id_written_by_an_older_version_fails_its_job_not_the_queue(ws, q):
    """Rows from before project ids were checked at enqueue: recovery and apply fail the job (it
    can be cancelled) instead of raising on every call, which made the ingest API unusable."""
    src = write(ws.root / "incoming" / "old.png", b"an old job")
    staged = q.enqueue(source_path=str(src))
    applying = q.enqueue(source_path=str(write(ws.root / "incoming" / "older.png", b"another old job")))
    with q.db.transaction() as conn:
        conn.execute("UPDATE ingest_jobs SET project_id = '../..' WHERE job_id IN (?, ?)",
                     (staged["job_id"], applying["job_id"]))
        conn.execute("UPDATE ingest_jobs SET status = 'applying', owner = NULL WHERE job_id = ?",
                     (applying["job_id"],))
    assert q.recover()["failed"] == 1
    assert q.get(applying["job_id"])["status"] == "failed" and "project_id" in q.get(applying["job_id"])["error"]
    [failed] = q.apply([staged["job_id"]])["failed"]
    assert failed["status"] == "failed" and "project_id" in failed["error"]
    assert q.summary()  # the queue still answers
