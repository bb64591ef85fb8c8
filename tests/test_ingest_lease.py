"""Claim leases (issue 18, operations): a claim records an expiry its worker renews, and recovery
takes back a claim whose lease ran out whatever its host; a claim of a dead process on this host
at once, as before.  Both engines (``COMFYVN_TEST_STORE=postgresql``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from comfyvn.config import update_config
from comfyvn.fsutil import _host_tag
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.jobstore import new_job
from comfyvn.ingest.queue import CRASH_ENV, AssetIngestQueue
from comfyvn.studio.core.asset_registry import SIDECAR_SUFFIX, AssetRegistry
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


# ---------------------------------------------------------------------------- apply claims
# A server on another machine (its host tag patched) applies three staged jobs and is SIGKILLed
# at ``point``: its ``applying`` claims and its journal entries are what a dead remote server leaves.
REMOTE_APPLY_CHILD = """
import os, signal, sys
import comfyvn.fsutil as fsutil
fsutil._host_tag = lambda: "0ther0"  # this process is a server on another machine
point = sys.argv[1]
if point == "registry.placed":  # the files moved into the assets root, their rows not committed
    from comfyvn.registry.placement import Placement
    real_place, hits = Placement.place, {"n": 0}

    def place(self, *args, **kwargs):
        out = real_place(self, *args, **kwargs)
        hits["n"] += 1
        if hits["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    Placement.place = place
from comfyvn.ingest import get_ingest_queue
get_ingest_queue().apply()
print("survived")
"""


def stage_three(q: AssetIngestQueue, ws) -> dict[str, bytes]:
    contents = {}
    for i in range(3):
        data = os.urandom(32 * 1024 + i)
        src = ws.root / "in" / f"sprite{i}.bin"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        contents[q.enqueue(source_path=src, pin=True)["job_id"]] = data
    return contents


def kill_remote_apply(subprocess_env: dict, point: str) -> None:
    env = {**subprocess_env, **({} if point.startswith("registry.") else {CRASH_ENV: point})}
    proc = subprocess.run([sys.executable, "-c", REMOTE_APPLY_CHILD, point], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)}


@pytest.mark.parametrize("point", ["apply.claimed", "registry.placed"])
def test_an_applying_claim_of_a_dead_server_on_another_host_is_taken_back(q, ws, subprocess_env, point):
    update_config({"ingest": {"lease_s": 1.0}}, ws)
    contents = stage_three(q, ws)
    kill_remote_apply(subprocess_env, point)
    jobs = [q.jobs.get(job_id) for job_id in contents]
    assert {j["status"] for j in jobs} == {JobStatus.APPLYING}
    assert {j["owner"].split("-")[0] for j in jobs} == {"0ther0"}  # nobody here can tell if it lives
    reg = AssetRegistry(ws=ws)
    journalled = 3 if point == "registry.placed" else 0
    assert len(reg._journal.entries()) == journalled and reg.pending_recovery() == []  # "alive": another host's
    assert all(j["lease_until"] is not None for j in jobs)  # the claim carries a lease...
    time.sleep(max(0.0, max(j["lease_until"] for j in jobs) - time.time()) + 0.05)  # ...that ran out

    assert q.recover()["restaged"] == 3
    for job_id, data in contents.items():
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.STAGED and job["owner"] is None and job["lease_until"] is None, job
        assert "recovered.restaged" in job["notes"]
        assert Path(job["staging_path"]).read_bytes() == data  # placed files moved back by the journal
    assert reg._journal.entries() == [] and list(reg.iter_assets()) == [] and files_in(reg.assets_root) == set()
    result = q.apply()  # and they apply
    assert result["failed"] == [] and len(result["applied"]) == 3
    for job_id, data in contents.items():
        assert Path(reg.get_asset(q.jobs.get(job_id)["asset_uid"])["abs_path"]).read_bytes() == data


def test_a_live_remote_apply_and_its_journal_are_left_alone(q, ws, subprocess_env):
    update_config({"ingest": {"lease_s": 1.0}}, ws)
    contents = stage_three(q, ws)
    kill_remote_apply(subprocess_env, "registry.placed")
    with q.db.transaction() as conn:  # its heartbeat renewed the lease: the server is alive
        conn.execute("UPDATE ingest_jobs SET lease_until = ?", (time.time() + 600,))
    reg = AssetRegistry(ws=ws)
    placed = files_in(reg.assets_root)
    time.sleep(1.1)
    q.recover()
    reg.recover()
    for job_id in contents:
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.APPLYING and job["owner"].startswith("0ther0-")
    assert len(reg._journal.entries()) == 3 and files_in(reg.assets_root) == placed and len(placed) == 2


def test_an_apply_that_lost_its_claim_cannot_commit(q, ws, monkeypatch):
    """A server paused past its lease (its claim taken back by another server's recovery) wakes up
    mid-apply: its group commit is refused, its placed files go back, it changes no job."""
    contents = stage_three(q, ws)
    from comfyvn.registry.placement import Placement

    real_place, taken = Placement.place, []

    def place(self, *args, **kwargs):
        out = real_place(self, *args, **kwargs)
        if not taken:  # meanwhile, recovery on another server took every claim of the batch
            with q.db.transaction() as conn:
                conn.execute("UPDATE ingest_jobs SET owner = ?, lease_until = ? WHERE status = 'applying'",
                             (OTHER_HOST, time.time() + 600))
            taken.append(True)
        return out
    monkeypatch.setattr(Placement, "place", place)
    result = q.apply()
    assert taken and result["applied"] == []
    reg = AssetRegistry(ws=ws)
    assert list(reg.iter_assets()) == [] and files_in(reg.assets_root) == set()
    for job_id, data in contents.items():
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.APPLYING and job["owner"] == OTHER_HOST, job  # the new holder's
        assert Path(job["staging_path"]).read_bytes() == data


def test_apply_renews_the_lease_of_its_batch_while_it_works(q, ws, monkeypatch):
    update_config({"ingest": {"lease_s": 0.6, "lease_renew_s": 0.1}}, ws)
    stage_three(q, ws)
    from comfyvn.registry.placement import Placement

    real_place, seen = Placement.place, []

    def slow_place(self, *args, **kwargs):  # a slow share: each move takes longer than the lease
        time.sleep(0.8)
        seen.append((time.time(), {j["job_id"]: j["lease_until"] for j in q.jobs.claimed()}))
        assert q.recover()["restaged"] == 0  # still renewed: nobody takes it back
        return real_place(self, *args, **kwargs)
    monkeypatch.setattr(Placement, "place", slow_place)
    result = q.apply()
    assert len(result["applied"]) == 3 and len(seen) == 3
    for now, leases in seen:  # each lease, set for 0.6 s at the claim, still runs 0.8 s and more later
        assert len(leases) == 3 and all(until is not None and until > now for until in leases.values()), leases
    assert seen[0][1] != seen[-1][1]  # renewed meanwhile
    assert all(q.jobs.get(j["job_id"])["lease_until"] is None for j in result["applied"])


def test_the_stuck_jobs_report_and_the_interrupted_list_follow_the_leases(q, ws):
    from comfyvn.ingest import repairs

    now = time.time()
    lapsed = claimed_job(q, OTHER_HOST, now - 30)  # a server on another machine died 30 s after its last renewal
    held = claimed_job(q, OTHER_HOST, now + 45)  # alive elsewhere: renewing, but silent
    with q.db.transaction() as conn:
        conn.execute("UPDATE ingest_jobs SET updated_at = ?", (now - 3600,))
    interrupted = {j["job_id"]: j for j in repairs.interrupted_jobs(q.jobs, now=now)}
    assert set(interrupted) == {lapsed}  # what the next recovery takes back, whatever its host
    assert interrupted[lapsed]["reason"] == "its lease ran out 30 s ago"
    stuck = {j["job_id"]: j["stuck_reason"] for j in repairs.find_stuck_jobs(q, stuck_minutes=30, now=now)}
    assert stuck[lapsed].startswith("downloading, no update for 60.0 min; its lease ran out 30 s ago: recovery "
                                    "takes it back at its next pass")
    assert stuck[held].startswith("downloading, no update for 60.0 min; cancel it")
    assert stuck[held].endswith("(its lease is still renewed, to 45 s from now)")
    assert q.recover()["requeued"] == 1
    assert [j["job_id"] for j in repairs.interrupted_jobs(q.jobs)] == []


def test_a_batch_its_own_live_server_failed_to_finish_is_taken_back_once_its_lease_ran_out(q, ws, monkeypatch):
    from comfyvn.store.errors import StoreUnavailable

    update_config({"ingest": {"lease_s": 0.5}}, ws)
    contents = stage_three(q, ws)

    def store_gone(jobs):
        raise StoreUnavailable("the store went away mid-batch")
    monkeypatch.setattr(q, "_sync_staged", store_gone)
    with pytest.raises(StoreUnavailable):
        q.apply()
    assert {q.jobs.get(j)["status"] for j in contents} == {JobStatus.APPLYING}  # ours, and we live on
    assert q.recover()["restaged"] == 0  # its lease still runs
    time.sleep(0.6)  # nobody renews it: the apply() call is over
    assert q.recover()["restaged"] == 3
    monkeypatch.undo()
    assert len(q.apply()["applied"]) == 3


def test_a_takeover_racing_the_old_holders_commit_waits_for_it_and_then_sees_it(q, ws, monkeypatch):
    """The old holder's commit has fenced its claims (its transaction holds the rows) when another
    server's recovery, which read them as lapsed, tries to take them over: the takeover waits for
    that commit and then finds the jobs applied, so it takes nothing."""
    contents = stage_three(q, ws)
    real_end_claims, attempts = q.jobs.end_claims, []

    def end_claims_then_race(conn, jobs, owner):
        real_end_claims(conn, jobs, owner)
        stale = dict(jobs[0])  # the claim as committed (and as another server read it, judged lapsed)

        def take_over() -> None:
            with q.db.transaction() as other:
                attempts.append((time.monotonic(), q.jobs.take_over(other, stale, OTHER_HOST, time.time() + 60)))
            q.db.close()
        racer = threading.Thread(target=take_over)
        racer.start()
        racer.join(0.5)  # it waits for this transaction
        assert racer.is_alive() and attempts == []
        attempts.append(racer)
    monkeypatch.setattr(q.jobs, "end_claims", end_claims_then_race)
    result = q.apply()
    racer = attempts.pop(0)
    racer.join(30)
    assert len(result["applied"]) == 3
    assert attempts and attempts[0][1] is None  # it found the job applied: nothing taken
    for job_id in contents:
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.APPLIED and job["owner"] is None and job["lease_until"] is None


def test_a_dead_remote_apply_is_undone_into_this_servers_staging_whatever_its_mount_point(q, ws, subprocess_env):
    """The dead server mounted the shared staging folder elsewhere: the paths it journalled do not
    exist here, and its placed files come back to this server's staging folder, by name."""
    update_config({"ingest": {"lease_s": 1.0}}, ws)
    contents = stage_three(q, ws)
    kill_remote_apply(subprocess_env, "registry.placed")
    elsewhere = ws.root / "other-server-mount" / "staging"  # (never created: not this server's)
    with q.db.transaction() as conn:
        for intent_id, src in conn.execute("SELECT id, src FROM file_intents").fetchall():
            conn.execute("UPDATE file_intents SET src = ? WHERE id = ?", (str(elsewhere / Path(src).name), intent_id))
    time.sleep(1.1)
    assert q.recover()["restaged"] == 3
    assert not elsewhere.exists()
    for job_id, data in contents.items():
        job = q.jobs.get(job_id)
        assert job["status"] == JobStatus.STAGED and Path(job["staging_path"]).parent == q.staging_dir
        assert Path(job["staging_path"]).read_bytes() == data
    assert len(q.apply()["applied"]) == 3
