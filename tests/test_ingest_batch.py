"""enqueue_many(): many local files staged with one transaction per chunk, then applied as a group.

Same guarantees as one enqueue() per file: dedup by content (against staged jobs, the registry and
earlier files of the same call), one event per job, sidecars, refused files reported without
stopping the others, bounded work per chunk.  Crash points are in tests/test_ingest_crash.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import comfyvn.ingest.queue as queue_module
import comfyvn.ingest.staging as staging_module
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import AssetIngestQueue
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def events(ws, topic: str) -> list[dict]:
    return get_hook_bus(open_store(ws)).history(10_000, topics=[topic])


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    AssetRegistry.wait_for_thumbnails(10)


def files(ws, n: int, prefix: str = "sprite") -> tuple[list[Path], list[bytes]]:
    contents = [os.urandom(2048) + bytes([i % 256]) for i in range(n)]
    return [write(ws.root / "in" / f"{prefix}_{i:03d}.png", data) for i, data in enumerate(contents)], contents


def test_stages_every_file_in_order_with_one_event_each(ws, q):
    paths, contents = files(ws, 7)
    result = q.enqueue_many(paths, chunk_size=3, asset_type_hint="characters", metadata={"tags": "batch"})
    assert result["errors"] == []
    jobs = result["jobs"]
    assert [j["source_path"] for j in jobs] == [str(p) for p in paths]
    assert [j["digest"] for j in jobs] == [sha(c) for c in contents]
    assert {j["status"] for j in jobs} == {"staged"}
    for job, data in zip(jobs, contents, strict=True):
        assert Path(job["staging_path"]).read_bytes() == data
        assert job["asset_type_hint"] == "characters" and job["metadata"]["tags"] == ["batch"]
        assert q.get(job["job_id"])["status"] == "staged"
    enqueued = events(ws, "on_asset_ingest_enqueued")
    assert sorted(e["data"]["job_id"] for e in enqueued) == sorted(j["job_id"] for j in jobs)
    assert not [p for p in q.staging_dir.iterdir() if p.name.endswith(".tmp")]


def test_items_may_be_dicts_whose_arguments_win_over_the_defaults(ws, q):
    paths, _ = files(ws, 2)
    result = q.enqueue_many([{"source_path": paths[0], "dest_relative": "backgrounds/", "pin": True},
                             str(paths[1])], asset_type_hint="characters")
    first, second = result["jobs"]
    assert first["dest_relative"] == "backgrounds/" and first["pin"] is True
    assert second["dest_relative"] is None and second["pin"] is False
    assert first["asset_type_hint"] == second["asset_type_hint"] == "characters"


def test_dedup_within_the_call_across_chunks_against_staged_and_registered(ws, q):
    paths, contents = files(ws, 4)
    registered = q.enqueue(source_path=paths[0])
    q.apply([registered["job_id"]])
    staged = q.enqueue(source_path=paths[1])
    copy = write(ws.root / "in" / "copy_of_2.png", contents[2])
    result = q.enqueue_many([paths[0], paths[1], paths[2], paths[3], copy, paths[2]], chunk_size=4)
    by_path = [j for j in result["jobs"]]
    assert [j["status"] for j in by_path] == ["duplicate", "duplicate", "staged", "staged", "duplicate", "duplicate"]
    assert by_path[0]["existing_uid"] == sha(contents[0])[:16] and "duplicate.registry" in by_path[0]["notes"]
    assert by_path[1]["dedup_of"] == staged["job_id"] and "duplicate.staged" in by_path[1]["notes"]
    assert by_path[4]["dedup_of"] == by_path[2]["job_id"]  # the same bytes in the next chunk
    assert by_path[5]["dedup_of"] == by_path[2]["job_id"]  # the same file in the same chunk
    for job in by_path:
        if job["status"] == "duplicate":
            assert job["staging_path"] is None and q.job_files(job["job_id"]) == []
    snapshot = q.dedup_snapshot()
    assert snapshot[sha(contents[2])]["job_id"] == by_path[2]["job_id"]


def test_a_refused_or_missing_file_is_reported_and_the_others_are_staged(ws, q):
    paths, _ = files(ws, 2)
    secret = write(ws.root / "in" / ".env", b"TOKEN=1")
    outside = write(ws.root.parent / "outside" / "x.png", b"x" * 100)
    items = [paths[0], ws.root / "in" / "missing.png", secret, outside,
             {"source_path": paths[1], "dest_relative": "../escape/"}, {"source_path": paths[1], "bogus": 1},
             {"metadata": {}}, paths[1]]
    result = q.enqueue_many(items)
    assert [j["source_path"] for j in result["jobs"]] == [str(paths[0]), str(paths[1])]
    errors = {e["index"]: e for e in result["errors"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1]["error"] == "file_not_found"
    assert errors[2]["error"] == "source_refused" and ".env" in errors[2]["message"]
    assert errors[3]["error"] == "source_not_allowed"
    assert errors[4]["error"] == "unsafe_path"
    assert errors[5]["error"] == "invalid_request" and "bogus" in errors[5]["message"]
    assert errors[6]["error"] == "invalid_request" and "source_path" in errors[6]["message"]
    assert all(set(e) == {"index", "source_path", "error", "message"} for e in result["errors"])
    staged = {p.name for p in q.staging_dir.iterdir()}
    assert staged == {Path(j["staging_path"]).name for j in result["jobs"]}  # nothing else was left


def test_bad_call_arguments_fail_before_anything_is_staged(ws, q):
    paths, _ = files(ws, 2)
    with pytest.raises(ValueError, match="asset_type_hint"):
        q.enqueue_many(paths, asset_type_hint="Not A Type")
    with pytest.raises(TypeError, match="remote_url"):
        q.enqueue_many(paths, remote_url="https://civitai.com/models/1")
    with pytest.raises(ValueError, match="not a single one"):
        q.enqueue_many(str(paths[0]))
    with pytest.raises(ValueError, match="chunk_size"):
        q.enqueue_many(paths, chunk_size=0)
    assert q.list_jobs() == [] and list(q.staging_dir.iterdir()) == []


def test_a_generator_is_read_one_chunk_at_a_time(ws, q):
    """Bounded work for huge batches: the next chunk is only read once the previous one committed."""
    paths, _ = files(ws, 10)
    chunk = 3

    def items():
        for i, path in enumerate(paths):
            committed = q.summary()["counts"]["staged"]
            assert committed >= i - i % chunk  # every earlier full chunk is recorded already
            assert committed <= i  # and nothing ahead of what was read
            yield path

    result = q.enqueue_many(items(), chunk_size=chunk)
    assert len(result["jobs"]) == 10 and result["errors"] == []


def test_applied_as_a_group_with_rows_sidecars_and_one_event_per_asset(ws, q):
    paths, contents = files(ws, 40)
    jobs = q.enqueue_many(paths, asset_type_hint="sprites")["jobs"]
    result = q.apply([j["job_id"] for j in jobs])
    assert len(result["applied"]) == 40 and result["failed"] == []
    reg = AssetRegistry(ws=ws)
    for job, data in zip(result["applied"], contents, strict=True):
        asset = reg.get_asset(job["asset_uid"])
        assert Path(asset["abs_path"]).read_bytes() == data
        assert reg.read_sidecar(asset["uid"])["hash"] == sha(data)
    applied = events(ws, "on_asset_ingest_applied")
    assert sorted(e["data"]["job_id"] for e in applied) == sorted(j["job_id"] for j in jobs)
    registered = events(ws, "on_asset_registered")
    assert sorted(e["data"]["uid"] for e in registered) == sorted(sha(c)[:16] for c in contents)
    assert list(q.staging_dir.iterdir()) == []


@pytest.fixture
def sync_calls(monkeypatch) -> tuple[list[int], list[str]]:
    """``(syncfs calls, fsynced paths)`` of staged files from now on (both really done)."""
    fsynced: list[str] = []
    real_fsync = queue_module.fsync_file
    monkeypatch.setattr(queue_module, "fsync_file", lambda path: fsynced.append(str(path)) or real_fsync(path))
    synced_fs: list[int] = []
    real_syncfs = staging_module._syncfs
    if real_syncfs is None:
        pytest.fail("this Linux test machine must offer syncfs()")
    monkeypatch.setattr(staging_module, "_syncfs", lambda fd: synced_fs.append(fd) or real_syncfs(fd))
    return synced_fs, fsynced


def test_a_chunk_is_made_durable_with_one_syncfs_before_its_rows_commit(ws, q, sync_calls):
    synced_fs, fsynced = sync_calls
    paths, _ = files(ws, staging_module.SYNCFS_MIN_FILES + 4)
    jobs = q.enqueue_many(paths)["jobs"]
    assert len(synced_fs) == 1
    assert len(q.apply([j["job_id"] for j in jobs])["applied"]) == len(paths)
    assert len(synced_fs) == 1 and fsynced == []  # nothing left to sync at apply

    few, _ = files(ws, 3, prefix="few")  # below the threshold: written behind, an fsync each at apply
    jobs = q.enqueue_many(few)["jobs"]
    q.apply([j["job_id"] for j in jobs])
    assert len(synced_fs) == 1 and sorted(fsynced) == sorted(j["staging_path"] for j in jobs)


def test_apply_makes_many_written_behind_files_durable_with_one_syncfs(ws, q, sync_calls):
    synced_fs, fsynced = sync_calls
    paths, _ = files(ws, staging_module.SYNCFS_MIN_FILES + 4)
    jobs = [q.enqueue(source_path=p) for p in paths]  # one by one: each written behind
    assert synced_fs == []
    assert len(q.apply([j["job_id"] for j in jobs])["applied"]) == len(paths)
    assert len(synced_fs) == 1 and fsynced == []


def test_without_syncfs_every_staged_file_is_fsynced(ws, q, monkeypatch):
    fsynced: list[str] = []
    monkeypatch.setattr(queue_module, "fsync_file", lambda path: fsynced.append(str(path)))
    monkeypatch.setattr(staging_module, "_syncfs", None)
    paths, _ = files(ws, staging_module.SYNCFS_MIN_FILES + 1)
    jobs = q.enqueue_many(paths)["jobs"]
    q.apply([j["job_id"] for j in jobs])
    assert sorted(fsynced) == sorted(j["staging_path"] for j in jobs)


def test_a_failing_syncfs_falls_back_to_an_fsync_each(ws, q, monkeypatch):
    fsynced: list[str] = []
    monkeypatch.setattr(queue_module, "fsync_file", lambda path: fsynced.append(str(path)))
    monkeypatch.setattr(staging_module, "_syncfs", lambda fd: -1)  # e.g. EIO from write-back
    paths, _ = files(ws, staging_module.SYNCFS_MIN_FILES + 1)
    jobs = q.enqueue_many(paths)["jobs"]
    q.apply([j["job_id"] for j in jobs])
    assert sorted(fsynced) == sorted(j["staging_path"] for j in jobs)


def test_one_failing_item_of_a_group_commit_fails_alone(ws, q):
    """The group commit without a savepoint per item falls back to item by item when one fails."""
    paths, contents = files(ws, 5)
    jobs = q.enqueue_many(paths, dest_relative="sprites/")["jobs"]
    blocked = AssetRegistry(ws=ws).assets_root / "sprites" / f"{paths[2].name}.asset.json"
    blocked.mkdir(parents=True)  # its sidecar cannot be written
    result = q.apply([j["job_id"] for j in jobs])
    assert [j["job_id"] for j in result["failed"]] == [jobs[2]["job_id"]]
    assert len(result["applied"]) == 4
    reg = AssetRegistry(ws=ws)
    assert reg.count() == 4 and reg.find_by_hash(sha(contents[2])) is None
    for job in result["applied"]:
        assert reg.read_sidecar(job["asset_uid"])["uid"] == job["asset_uid"]
    applied = events(ws, "on_asset_ingest_applied")
    assert sorted(e["data"]["job_id"] for e in applied) == sorted(j["job_id"] for j in result["applied"])
    retry = q.get(jobs[2]["job_id"])
    assert retry["status"] == "failed" and Path(retry["staging_path"]).read_bytes() == contents[2]
