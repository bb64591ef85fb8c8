"""queue_state.json / dedup_cache.json: versioned atomic exports, replay and migration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from comfyvn.config import set_feature
from comfyvn.ingest import STATE_VERSION, AssetIngestQueue, IngestError
from comfyvn.ingest.state import migrate_cache, migrate_state
from comfyvn.studio.core.asset_registry import AssetRegistry


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    AssetRegistry.wait_for_thumbnails(10)


def test_export_writes_both_versioned_files_atomically(ws, q):
    staged = q.enqueue(source_path=write(ws.root / "a.bin", b"a"), pin=True, metadata={"tags": "x"})
    applied = q.enqueue(source_path=write(ws.root / "b.bin", b"b"))
    q.apply([applied["job_id"]])
    out = q.export_state()
    assert out["version"] == STATE_VERSION and out["jobs"] == 2 and out["cache"] == 1
    state = json.loads(ws.queue_state_file.read_text())
    cache = json.loads(ws.dedup_cache_file.read_text())
    assert state["version"] == cache["version"] == STATE_VERSION and state["exported_at"].endswith("Z")
    assert [j["job_id"] for j in state["jobs"]] == [staged["job_id"], applied["job_id"]]
    assert state["jobs"][0]["user_metadata"] == {"tags": "x"} and state["jobs"][1]["status"] == "applied"
    assert cache["cache"] == {staged["digest"]: {**cache["cache"][staged["digest"]], "job_id": staged["job_id"],
                                                  "pinned": True, "status": "staged"}}
    assert not [p for p in ws.queue_state_file.parent.iterdir() if p.name.endswith(".tmp")]
    custom = q.export_state(ws.root / "archive" / "state.json")
    assert Path(custom["queue_state_file"]).is_file()
    assert Path(custom["dedup_cache_file"]) == ws.root / "archive" / "dedup_cache.json"


def test_round_trip_into_a_fresh_workspace(ws, q, tmp_path, monkeypatch):
    src = write(ws.root / "keep.bin", b"keep me")
    staged = q.enqueue(source_path=src, pin=True)
    done = q.enqueue(source_path=write(ws.root / "done.bin", b"done"))
    q.apply([done["job_id"]])
    q.export_state()
    archive = json.loads(ws.queue_state_file.read_text())

    other_root = tmp_path / "other"
    other_root.mkdir()
    from comfyvn.config import init_workspace, workspace

    other = init_workspace(workspace(other_root))
    monkeypatch.setenv("HOME", str(tmp_path))  # the archived source lies under the (new) home
    q2 = AssetIngestQueue(other)
    result = q2.import_state(archive)
    assert result["migrated_from"] is None and result["refused"] == []
    assert {j["job_id"]: j["status"] for j in result["imported"]} == {staged["job_id"]: "queued",
                                                                      done["job_id"]: "applied"}
    again = q2.get(staged["job_id"])
    assert "imported.restage" in again["notes"]  # the staging file lives in the other workspace
    [restaged] = q2.run_pending(timeout=10)
    assert restaged["status"] == "staged" and restaged["digest"] == staged["digest"]
    assert Path(restaged["staging_path"]).is_relative_to(other.staging_dir)
    assert q2.get(done["job_id"])["status"] == "applied"  # history, never re-run
    # importing the same archive again changes nothing
    assert [s["job_id"] for s in q2.import_state(archive)["skipped"]] == [staged["job_id"], done["job_id"]]


def test_import_into_the_same_workspace_keeps_a_staged_file_and_its_pin(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"staged bytes"))
    q.export_state()
    with q.db.transaction() as conn:  # the database was lost; the staging folder and the exports were not
        conn.execute("DELETE FROM ingest_jobs")
    result = q.import_state(ws.queue_state_file, dedup_cache={"version": 2, "cache": {
        job["digest"]: {"job_id": job["job_id"], "pinned": True}}})
    assert result["imported"] == [{"job_id": job["job_id"], "status": "staged"}]
    back = q.get(job["job_id"])
    assert back["staging_path"] == job["staging_path"] and back["pin"] is True
    assert q.apply()["applied"][0]["job_id"] == job["job_id"]


def test_a_staging_path_outside_the_staging_folder_is_never_trusted(ws, q):
    victim = write(ws.root / "precious.bin", b"do not move me")
    doc = {"version": 2, "jobs": [{"job_id": "evil00000001", "provider": "local", "status": "staged",
                                   "source_path": str(victim), "staging_path": str(victim),
                                   "digest": hashlib.sha256(b"do not move me").hexdigest()}]}
    q.import_state(doc)
    assert q.get("evil00000001")["status"] == "queued"  # re-staged from the source instead
    q.run_pending(timeout=10)
    q.apply()
    assert victim.read_bytes() == b"do not move me"


V1 = {
    "version": 1,
    "saved_at": 1734850000.0,
    "queue": [
        {"id": "v1local00001", "provider": "local", "state": "pending", "source": None, "url": None,
         "sha256": None, "size": 4, "meta": {"tags": "old, archive"}, "type_hint": "images", "dest": None,
         "pinned": False, "created": "2024-12-22T07:00:00Z"},
        {"id": "v1civit00001", "provider": "civitai", "state": "pending",
         "url": "https://civitai.com/api/download/models/1184630", "meta": {}, "pinned": True},
        {"id": "v1hf00000001", "provider": "huggingface", "state": "done",
         "url": "https://huggingface.co/a/b/resolve/main/x.safetensors", "terms": True,
         "sha256": "AB" * 32},
        {"id": "v1fail000001", "provider": "local", "state": "error", "source": "/gone/file.png",
         "error": "Staging file missing"},
    ],
}


def test_v1_state_is_migrated_not_discarded(ws, q):
    doc = json.loads(json.dumps(V1))
    doc["queue"][0]["source"] = str(write(ws.root / "old.png", b"old!"))
    result = q.import_state(doc)
    assert result["migrated_from"] == 1
    imported = {j["job_id"]: j["status"] for j in result["imported"]}
    assert imported == {"v1local00001": "queued", "v1hf00000001": "applied", "v1fail000001": "failed"}
    [refused] = result["refused"]  # the archive never acknowledged the Civitai terms
    assert refused["job_id"] == "v1civit00001" and "terms_acknowledged" in refused["reason"]
    assert "require_remote_terms_ack" in refused["reason"]
    local = q.get("v1local00001")
    assert local["asset_type_hint"] == "images" and local["metadata"]["tags"] == ["old", "archive"]
    assert local["created_at"] == pytest.approx(1734850800.0)
    assert q.get("v1hf00000001")["digest"] == "ab" * 32 and q.get("v1hf00000001")["terms_acknowledged"] is True
    assert q.get("v1fail000001")["error"] == "Staging file missing"
    [staged] = q.run_pending(timeout=10)
    assert staged["job_id"] == "v1local00001" and staged["status"] == "staged"
    # with the flag off the archived Civitai request replays (flagged as unacknowledged)
    set_feature("require_remote_terms_ack", False, ws)
    again = q.import_state(doc)
    assert [j["job_id"] for j in again["imported"]] == ["v1civit00001"]
    civit = q.get("v1civit00001")
    assert civit["status"] == "queued" and civit["terms_acknowledged"] is False and civit["pin"] is False


def test_v1_dedup_cache_is_migrated():
    doc, original = migrate_cache({"version": 1, "entries": {"AB" * 32: {"job": "x", "pinned": True}}})
    assert original == 1 and doc == {"version": 2, "cache": {"ab" * 32: {"job_id": "x", "pinned": True}}}


@pytest.mark.parametrize("doc, message", [
    ({"version": 99, "jobs": []}, "newer"),
    ({"version": "two", "jobs": []}, "version"),
    ({"version": 2}, "jobs"),
    ([], "JSON object"),
    ({"version": 1, "queue": [{"id": "a", "state": "exploded"}]}, "unknown state"),
])
def test_bad_state_documents_are_refused_with_a_reason(doc, message):
    with pytest.raises(IngestError, match=message):
        migrate_state(doc)


def test_bad_entries_are_refused_one_by_one(ws, q, tmp_path):
    doc = {"version": 2, "jobs": [
        {"provider": "local", "source_path": "/x"},
        {"job_id": "nosource0001", "provider": "local"},
        {"job_id": "badprov00001", "provider": "myspace", "source_path": "/x"},
        {"job_id": "badtype00001", "provider": "local", "source_path": "/x", "asset_type_hint": "../x"},
        {"job_id": "baddest00001", "provider": "local", "source_path": "/x", "dest_relative": "../../x"},
        {"job_id": "badproj00001", "provider": "local", "source_path": "/x", "project_id": "../.."},
    ]}
    result = q.import_state(doc)
    assert result["imported"] == [] and len(result["refused"]) == 6
    assert [r["job_id"] for r in result["refused"]] == [None, "nosource0001", "badprov00001", "badtype00001",
                                                        "baddest00001", "badproj00001"]
    assert "project_id" in result["refused"][-1]["reason"]
    broken = write(tmp_path / "broken.json", b"{not json")
    with pytest.raises(IngestError, match="not valid JSON"):
        q.import_state(broken)
    with pytest.raises(IngestError, match="does not exist"):
        q.import_state(tmp_path / "missing.json")


def test_imported_staged_bytes_are_checked_against_their_digest_before_apply(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"the real bytes"))
    q.export_state()
    with q.db.transaction() as conn:
        conn.execute("DELETE FROM ingest_jobs")
    Path(job["staging_path"]).write_bytes(b"other bytes!!!")  # the state file vouches for a digest
    q.import_state(ws.queue_state_file)
    [failed] = q.apply()["failed"]
    assert failed["job_id"] == job["job_id"] and "no longer match their digest" in failed["error"]
    assert AssetRegistry(ws=ws).count() == 0 and not Path(job["staging_path"]).exists()
