"""Claim leases (issue 18, operations): a claim records an expiry its worker renews, and recovery
takes back a claim whose lease ran out whatever its host; a claim of a dead process on this host
at once, as before.  Both engines (``COMFYVN_TEST_STORE=postgresql``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from comfyvn.config import update_config
from comfyvn.fsutil import _host_tag
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.jobstore import new_job
from comfyvn.ingest.queue import AssetIngestQueue
from tests.fakes import FakeProviders
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401

OTHER_HOST = "0ther0-4242-123456"  # an owner token of a process on another machine


@pytest.fixture
def q(ws):
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 100}}, ws)
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()


def claimed_job(q: AssetIngestQueue, owner: str, lease_until: float | None) -> str:
    """A remote job ``downloading`` under ``owner`` with ``lease_until``, as its worker left it."""
    job = new_job(provider="generic", remote_url=f"https://example.org/{os.urandom(4).hex()}.bin",
                  project_id=q.default_project, status=JobStatus.DOWNLOADING, owner=owner,
                  lease_until=lease_until, terms_acknowledged=True)
    with q.db.transaction() as conn:
        q.jobs.insert(conn, job)
    return job["job_id"]


def dead_local_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return f"{_host_tag()}-{int(proc.stdout)}-1"


def test_an_expired_lease_of_another_host_is_taken_back(q):
    expired = claimed_job(q, OTHER_HOST, time.time() - 1)
    stats = q.recover()
    job = q.jobs.get(expired)
    assert job["status"] == JobStatus.QUEUED and job["owner"] is None and job["lease_until"] is None
    assert "recovered.interrupted" in job["notes"]
    assert stats["requeued"] == 1


def test_a_renewed_lease_of_another_host_is_left_alone(q):
    renewed = claimed_job(q, OTHER_HOST, time.time() - 1)  # expired, then renewed by its worker
    assert q.jobs.renew_leases([renewed], OTHER_HOST, time.time() + 60) == 1
    unleased = claimed_job(q, OTHER_HOST, None)  # a claim without a lease: owner liveness only
    assert q.recover()["requeued"] == 0
    for job_id in (renewed, unleased):
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.DOWNLOADING and job["owner"] == OTHER_HOST


def test_renewal_is_refused_to_anyone_but_the_owner_and_after_the_claim_ended(q):
    job_id = claimed_job(q, OTHER_HOST, time.time() - 1)
    assert q.jobs.renew_leases([job_id], "someone-1-1", time.time() + 60) == 0
    q.recover()  # taken back: the late heartbeat of the old owner must not revive the lease
    assert q.jobs.renew_leases([job_id], OTHER_HOST, time.time() + 60) == 0
    assert q.jobs.get(job_id)["lease_until"] is None


def test_a_dead_process_on_this_host_is_recovered_at_once_whatever_its_lease(q):
    job_id = claimed_job(q, dead_local_owner(), time.time() + 600)
    assert q.recover()["requeued"] == 1
    assert q.jobs.get(job_id)["status"] == JobStatus.QUEUED


def test_the_worker_renews_the_lease_of_a_running_pull_so_no_recovery_takes_it(q, provider_servers, ws):
    update_config({"ingest": {"lease_s": 1.0, "lease_renew_s": 0.2}}, ws)
    provider_servers.inject("civitai_cdn", "/model/*", "slow", chunk=16 * 1024, delay=0.03)  # ~5 s of body
    job = q.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
    q.start_worker()
    deadline = time.monotonic() + 30
    while (row := q.jobs.get(job["job_id"]))["status"] != JobStatus.DOWNLOADING or not row["bytes_done"]:
        assert time.monotonic() < deadline, row
        time.sleep(0.05)
    leases = []
    for _ in range(3):  # three leases' worth of time: each would have run out unless renewed
        time.sleep(1.0)
        row = q.jobs.get(job["job_id"])
        if row["status"] != JobStatus.DOWNLOADING:
            break
        leases.append(row["lease_until"])
        assert q.recover()["requeued"] == 0
        assert row["lease_until"] > time.time() - 0.5
    assert len(leases) >= 2 and leases == sorted(leases) and len(set(leases)) == len(leases)
    deadline = time.monotonic() + 60
    while (row := q.jobs.get(job["job_id"]))["status"] == JobStatus.DOWNLOADING:
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    assert row["status"] == JobStatus.STAGED, row
    assert "recovered.interrupted" not in row["notes"]
    assert row["lease_until"] is None  # the lease ended with the claim
