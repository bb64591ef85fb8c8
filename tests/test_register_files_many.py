"""register_files(on_commit_many=...): the rows of a group commit go in with one INSERT each for
assets and tags, and the caller's bookkeeping runs once for the whole group (the ingest queue
marks every applied job with one UPDATE statement)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import AssetIngestQueue
from comfyvn.store import forget_database, open_store
from comfyvn.studio.core.asset_registry import AssetRegistry


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def reg(ws):
    return AssetRegistry(ws=ws, make_thumbnails=False)


def test_on_commit_many_runs_once_with_every_row_of_the_group(ws, reg):
    items = [{"source_path": write(ws.root / "in" / f"f{i}.txt", f"bytes {i}".encode()), "asset_type": "docs",
              "tags": [f"t{i}", "common"]} for i in range(5)]
    items.insert(2, {"source_path": ws.root / "in" / "missing.txt", "asset_type": "docs"})
    calls: list[list[tuple[int, str]]] = []
    out = reg.register_files(items, on_commit_many=lambda conn, done: calls.append(
        [(index, record["uid"]) for index, record in done]))
    assert isinstance(out[2], FileNotFoundError)
    assert calls == [[(i, out[i]["uid"]) for i in (0, 1, 3, 4, 5)]]  # one call, in the items' order
    assert reg.count() == 5
    for i in (0, 1, 3, 4, 5):
        assert sorted(reg.get_asset(out[i]["uid"])["tags"]) == sorted([f"t{i - (i > 2)}", "common"])
    assert len(reg.query_assets(tags=["common"], limit=50)["items"]) == 5  # the tag rows are in too


def test_a_group_that_falls_back_to_item_by_item_still_reports_every_row(ws, reg):
    write(reg.assets_root / "docs" / "taken.txt", b"somebody else's")
    items = [{"source_path": write(ws.root / "in" / "a.txt", b"a"), "asset_type": "docs"},
             {"source_path": write(ws.root / "in" / "taken.txt", b"mine"), "asset_type": "docs"},
             {"source_path": write(ws.root / "in" / "b.txt", b"b"), "asset_type": "docs"}]
    seen: list[int] = []
    out = reg.register_files(items, on_commit_many=lambda conn, done: seen.extend(i for i, _ in done))
    assert sorted(seen) == [0, 2] and not isinstance(out[0], Exception) and not isinstance(out[2], Exception)


def test_on_commit_and_on_commit_many_together_are_refused(ws, reg):
    with pytest.raises(ValueError, match="not both"):
        reg.register_files([], on_commit=lambda *a: None, on_commit_many=lambda *a: None)


def test_the_queue_marks_every_applied_job_of_a_group_in_one_call(ws, monkeypatch):
    q = AssetIngestQueue(ws)
    paths = [write(ws.root / "in" / f"s{i}.png", os.urandom(512)) for i in range(6)]
    jobs = q.enqueue_many(paths)["jobs"]
    registry = q.registry()
    real = registry.register_files
    groups: list[int] = []

    def traced(items, *, on_commit_many):
        def counted(conn, done):
            groups.append(len(done))
            on_commit_many(conn, done)
        return real(items, on_commit_many=counted)

    monkeypatch.setattr(registry, "register_files", traced)
    start = get_hook_bus(open_store(ws)).last_id()
    result = q.apply([j["job_id"] for j in jobs])
    assert len(result["applied"]) == 6 and groups == [6]
    applied = [e for e in get_hook_bus(open_store(ws)).events_after(start) if e["event"] == "on_asset_ingest_applied"]
    assert sorted(e["data"]["job_id"] for e in applied) == sorted(j["job_id"] for j in jobs)
    assert all(e["data"]["path"] and e["data"]["sidecar"] and e["data"]["asset_uid"] for e in applied)
    assert {q.get(j["job_id"])["status"] for j in jobs} == {"applied"}
    assert all(q.get(j["job_id"])["staging_path"] is None for j in jobs)
    q.stop_worker()


def test_the_batched_apply_on_postgresql(ws, pg_url, monkeypatch):
    monkeypatch.setenv("COMFYVN_STORE_URL", pg_url)  # the same SQL on the team store
    q = AssetIngestQueue(ws)
    paths = [write(ws.root / "in" / f"p{i}.png", os.urandom(300)) for i in range(5)]
    jobs = q.enqueue_many(paths, metadata={"tags": ["pg", "batch"]})["jobs"]
    result = q.apply([j["job_id"] for j in jobs])
    assert len(result["applied"]) == 5 and result["failed"] == []
    reg = q.registry()
    assert reg.db.engine == "postgresql" and reg.count() == 5
    assert len(reg.query_assets(tags=["pg"], limit=50)["items"]) == 5
    assert {q.get(j["job_id"])["status"] for j in jobs} == {"applied"}
    q.stop_worker()
    forget_database(pg_url)  # close its pool before the session's server goes away
