"""The queue repairs the runbooks perform, called directly (no papermill, no pandas)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyvn.config import feature_enabled, set_feature
from comfyvn.fsutil import owner_token
from comfyvn.ingest import repairs
from comfyvn.ingest.errors import InvalidTransitionError, JobNotFoundError
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.jobstore import JobStore, new_job
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.ingest.staging import STAGING_MISSING
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()
    AssetRegistry.wait_for_thumbnails(10)


def source(ws, name: str, data: bytes | None = None) -> Path:
    path = ws.root / "incoming" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else name.encode() * 10)
    return path


def test_requeue_missing_staging_restages_from_the_source_and_names_a_gone_source(ws, q):
    missing = q.enqueue(source_path=source(ws, "kept.bin"))
    Path(missing["staging_path"]).unlink()  # external tooling cleaned the staging folder
    gone_src = source(ws, "gone.bin")
    gone = q.enqueue(source_path=gone_src)
    Path(gone["staging_path"]).unlink()
    gone_src.unlink()
    fine = q.enqueue(source_path=source(ws, "fine.bin"))

    planned = {r["job_id"]: r for r in repairs.requeue_missing_staging(q, dry_run=True)}
    assert set(planned) == {missing["job_id"], gone["job_id"]}
    assert planned[gone["job_id"]]["action"] == "cannot re-queue: source gone"
    assert q.get(missing["job_id"])["status"] == "staged"  # a dry run changes nothing

    rows = {r["job_id"]: r for r in repairs.requeue_missing_staging(q)}
    assert rows[missing["job_id"]]["action"] == "marked failed; re-queued"
    assert rows[missing["job_id"]]["now"] == "staged" and Path(q.get(missing["job_id"])["staging_path"]).is_file()
    assert rows[gone["job_id"]]["now"] == "failed" and "is gone too" in rows[gone["job_id"]]["detail"]
    assert q.get(gone["job_id"])["error"] == STAGING_MISSING
    assert rows[gone["job_id"]]["now"] not in repairs.REQUEUED_OK
    assert q.get(fine["job_id"])["status"] == "staged"
    assert repairs.requeue_missing_staging(q) == [rows[gone["job_id"]] | {"was": "failed", "action": "not re-queued"}]


def test_release_job_releases_cancels_and_refuses_with_the_queue_reason(ws, q):
    staged = q.enqueue(source_path=source(ws, "a.bin"), pin=True)
    outcome = repairs.release_job(q, staged["job_id"])
    assert outcome.action == JobStatus.RELEASED and outcome.after["status"] == "released" and not outcome.problems
    assert not Path(staged["staging_path"]).exists() and staged["digest"] not in q.dedup_snapshot()

    applied = q.enqueue(source_path=source(ws, "b.bin"))
    q.apply([applied["job_id"]])
    with pytest.raises(InvalidTransitionError, match="remove the asset from the registry"):
        repairs.release_job(q, applied["job_id"])
    with pytest.raises(JobNotFoundError, match="no job 'nosuchjob000'"):
        repairs.release_job(q, "nosuchjob000")

    with q.db.transaction() as conn:  # a pull that hangs: pending, held by nobody alive here
        queued = q.jobs.insert(conn, new_job(job_id="hungpull0001", project_id="default", provider="generic",
                                             remote_url="https://example.org/big.bin"))
    with pytest.raises(InvalidTransitionError, match="cancel it instead"):
        repairs.release_job(q, queued["job_id"])
    outcome = repairs.release_job(q, queued["job_id"], cancel_active=True)
    assert outcome.action == JobStatus.CANCELLED and q.get(queued["job_id"])["status"] == "cancelled"


def test_stuck_and_interrupted_jobs(ws, q):
    staged = q.enqueue(source_path=source(ws, "a.bin"))
    Path(staged["staging_path"]).unlink()
    busy = q.enqueue(source_path=source(ws, "b.bin"))
    with q.db.transaction() as conn:  # "applying" since an hour, owned by a process that is gone
        q.jobs.update(conn, q.jobs.row(conn, busy["job_id"]), None,
                      {"status": JobStatus.APPLYING, "owner": f"{owner_token().split('-')[0]}-4194399-1"})
        conn.execute("UPDATE ingest_jobs SET updated_at = updated_at - 3600 WHERE job_id = ?", (busy["job_id"],))
    stuck = {j["job_id"]: j["stuck_reason"] for j in repairs.find_stuck_jobs(q, stuck_minutes=30)}
    assert stuck[staged["job_id"]].startswith("staged, but its staging file is missing")
    assert stuck[busy["job_id"]].startswith("applying, no update for 60.")
    assert repairs.find_stuck_jobs(q, stuck_minutes=90) == [j for j in repairs.find_stuck_jobs(q, stuck_minutes=90)
                                                            if j["job_id"] == staged["job_id"]]

    store = JobStore(open_store(ws))
    assert [j["job_id"] for j in repairs.interrupted_jobs(store)] == [busy["job_id"]]
    with q.db.transaction() as conn:  # a live owner (this process) is not interrupted
        q.jobs.update(conn, q.jobs.row(conn, busy["job_id"]), None, {"owner": owner_token()})
    assert repairs.interrupted_jobs(store) == []


def test_dedup_cache_entries_flag_a_missing_staging_file(ws, q):
    kept = q.enqueue(source_path=source(ws, "a.bin"), pin=True)
    lost = q.enqueue(source_path=source(ws, "b.bin"))
    Path(lost["staging_path"]).unlink()
    rows = {r["job_id"]: r for r in repairs.dedup_cache_entries(q)}
    assert rows[kept["job_id"]]["file_present"] and rows[kept["job_id"]]["pinned"]
    assert not rows[lost["job_id"]]["file_present"] and rows[lost["job_id"]]["digest"] == lost["digest"]
    assert repairs.cache_entries({"cache": {"d": 1}}) == {"d": 1} == repairs.cache_entries({"d": 1})


def test_replay_archive_turns_the_terms_flag_off_for_the_import_only(ws, q, tmp_path):
    archive = tmp_path / "queue_state.json"
    archive.write_text(json.dumps({"version": 1, "queue": [
        {"id": "arch0remote1", "provider": "generic", "state": "pending", "url": "https://example.org/a.bin"}]}))
    doc, version = repairs.read_archive(archive)
    assert version == 1 and repairs.unacknowledged_remote(doc) == ["arch0remote1"]
    set_feature("require_remote_terms_ack", True, ws)

    refused = repairs.replay_archive(q, archive)
    assert "terms.not_acknowledged" in refused.result["refused"][0]["reason"] and q.get("arch0remote1") is None

    done = repairs.replay_archive(q, archive, disable_terms_ack=True)
    assert (done.flag_before, done.flag_during, done.flag_after) == (True, False, True)
    assert [j["job_id"] for j in done.result["imported"]] == ["arch0remote1"]
    assert feature_enabled("require_remote_terms_ack", ws)

    archive.write_text("{torn")
    with pytest.raises(ValueError, match="is not valid JSON"):
        repairs.read_archive(archive)
