"""The job vocabulary (comfyvn.ingest.jobs): one answer to "which statuses", used everywhere."""

from __future__ import annotations

import json

import pytest
from comfyvn_server_ext.handlers.ingest import enqueue_status
from comfyvn_server_ext.openapi import build_openapi
from comfyvn_widgets.queue_model import ACTIONS

from comfyvn.ingest import jobs
from comfyvn.ingest.errors import InvalidTransitionError
from comfyvn.ingest.jobs import (
    CLAIMED,
    FINAL,
    HOLDS_DIGEST,
    PENDING,
    SETTLED,
    STATUSES,
    TRANSITIONS,
    UNSETTLED,
    JobAction,
    JobStatus,
)
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.studio.core.asset_registry import AssetRegistry


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()
    AssetRegistry.wait_for_thumbnails(10)


def test_a_status_is_its_plain_string_in_json_and_sql(ws, q):
    assert json.dumps({"status": JobStatus.STAGED}) == '{"status": "staged"}'
    assert f"{JobStatus.QUEUED}" == "queued" and JobStatus("failed") is JobStatus.FAILED
    assert [str(s) for s in STATUSES] == ["queued", "downloading", "staged", "applying", "applied", "duplicate",
                                          "failed", "released", "cancelled"]
    assert tuple(q.db.query_one("SELECT typeof(?), ?", (JobStatus.APPLIED, JobStatus.APPLIED))) == ("text", "applied")
    with pytest.raises(ValueError, match="unknown status 'pending'; use one of queued, downloading"):
        jobs.check_status("pending")


def test_pending_has_one_meaning_and_the_other_sets_have_their_own_names():
    # "pending" used to be {queued, downloading} (HTTP 202), {queued, downloading, applying} (the
    # reliability harness) and {downloading, applying} (the runbooks): one name each now
    assert PENDING == {"queued", "downloading"}
    assert CLAIMED == {"downloading", "applying"}
    assert UNSETTLED == {"queued", "downloading", "applying"} == PENDING | CLAIMED
    assert HOLDS_DIGEST == {"staged", "applying"}
    assert SETTLED == {"applied", "duplicate", "failed", "released", "cancelled"}
    assert FINAL == {"applied", "released"}
    # the HTTP API answers 202 exactly for the pending statuses
    assert {s for s in STATUSES if enqueue_status({"status": s}) == 202} == PENDING
    assert enqueue_status({"status": "staged"}) == 201 and enqueue_status({"status": "duplicate"}) == 200


def test_the_clients_show_the_same_statuses_and_actions():
    assert ACTIONS == {str(a): TRANSITIONS[a] for a in JobAction}
    spec = build_openapi()
    (status_param,) = [p for p in spec["paths"]["/api/ingest/jobs"]["get"]["parameters"] if p["name"] == "status"]
    assert status_param["schema"]["enum"] == list(STATUSES)


def _job_in(q, ws, status: JobStatus, n: int) -> str:
    src = ws.root / "incoming" / f"f{n}.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(f"bytes of job {n}".encode())
    job = q.enqueue(source_path=src)
    with q.db.transaction() as conn:  # put it in the status under test
        conn.execute("UPDATE ingest_jobs SET status = ? WHERE job_id = ?", (status, job["job_id"]))
    return job["job_id"]


@pytest.mark.parametrize("action", [JobAction.RELEASE, JobAction.CANCEL, JobAction.RETRY, JobAction.APPLY])
def test_the_queue_accepts_an_action_exactly_where_the_table_allows_it(ws, q, action):
    idempotent = {JobAction.RELEASE: JobStatus.RELEASED, JobAction.CANCEL: JobStatus.CANCELLED}
    for n, status in enumerate(STATUSES):
        job_id = _job_in(q, ws, status, n)
        if action == JobAction.APPLY:
            result = q.apply([job_id])
            accepted = not result["skipped"] or result["skipped"][0]["status"] != status
        else:
            try:
                getattr(q, action)(job_id)
                accepted = True
            except InvalidTransitionError:
                accepted = False
        expected = jobs.allows(action, status) or idempotent.get(action) == status
        assert accepted == expected, (action, status)
        assert (action in jobs.actions_for(status)) == jobs.allows(action, status)


def test_status_sets_in_statements_still_use_the_partial_indexes(q):
    plan = " ".join(str(r[-1]) for r in q.db.query(
        "EXPLAIN QUERY PLAN SELECT job_id FROM ingest_jobs WHERE project_id = ? AND digest = ? AND status IN "
        f"{jobs.sql_in(HOLDS_DIGEST)}", ("default", "0" * 64)))
    assert "ingest_jobs_active_digest" in plan
    plan = " ".join(str(r[-1]) for r in q.db.query(
        "EXPLAIN QUERY PLAN SELECT job_id FROM ingest_jobs WHERE project_id = ? AND remote_url = ? AND status IN "
        f"{jobs.sql_in(PENDING)}", ("default", "https://x")))
    assert "ingest_jobs_active_url" in plan


def test_printed_jobs_and_summaries_read_as_plain_strings(ws, q):
    src = ws.root / "incoming" / "a.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(b"a")
    job = q.enqueue(source_path=src)
    assert "'status': 'staged'" in repr(job) and "JobStatus" not in repr(q.summary()["counts"])
