"""A PostgreSQL restart in the middle of a pull (issue 18, operations): the worker survives the
outage, backs off while the store is away (one warning), puts the interrupted job back in the
queue once the store answers and finishes it from its partial file, without a restart of the
workbench, and the event log has every step.  A real cluster of its own (it is restarted)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from pgserver import start_cluster

from comfyvn.config import init_workspace, update_config, workspace
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.store import StoreUnavailable, forget_database
from tests.fakes import FakeProviders

DIGEST = "5aa7e63d24217f0d43de816446389fe5e45ae125274f8f0702638689470e5cc9"  # the fake Civitai file
SIZE = 2731337


@pytest.fixture
def outage(tmp_path, monkeypatch) -> Iterator[dict]:
    """A workspace on a PostgreSQL cluster of its own, its queue and the fake providers."""
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cluster = start_cluster()
    url = cluster.create_database()
    root = tmp_path / "workspace"
    root.mkdir()
    monkeypatch.setenv("COMFYVN_HOME", str(root))
    monkeypatch.setenv("COMFYVN_STORE_URL", url)
    monkeypatch.chdir(root)
    ws = init_workspace(workspace(root))
    queue = None
    try:
        with FakeProviders() as fp:
            fp.configure(ws)
            update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 100}}, ws)
            queue = AssetIngestQueue(ws)
            yield {"cluster": cluster, "queue": queue, "fp": fp}
    finally:
        if queue is not None:
            queue.stop_worker()
        forget_database(url)
        cluster.destroy()


def wait_for_job(queue: AssetIngestQueue, job_id: str, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            row = queue.jobs.get(job_id)
        except StoreUnavailable:
            row = None
        if row is not None and check(row):
            return row
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s: {row}"
        time.sleep(0.1)


def test_a_pull_in_flight_when_postgresql_restarts_resumes_by_itself_and_is_staged(outage, caplog):
    cluster, queue, fp = outage["cluster"], outage["queue"], outage["fp"]
    fp.inject("civitai_cdn", "/model/*", "slow", chunk=16 * 1024, delay=0.03)  # ~5 s of body
    with caplog.at_level(logging.INFO, logger="comfyvn.ingest.worker"):
        job = queue.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
        queue.start_worker()
        worker_thread = queue.worker._thread
        wait_for_job(queue, job["job_id"], lambda r: r["status"] == JobStatus.DOWNLOADING and r["bytes_done"] > 0,
                     30, "the pull to be under way")
        cluster.stop()
        time.sleep(4.0)  # the pull notices the outage and the worker backs off (several tries)
        cluster.start()
        row = wait_for_job(queue, job["job_id"], lambda r: r["status"] not in (JobStatus.DOWNLOADING,
                                                                                JobStatus.QUEUED),
                           120, "the interrupted pull to finish")
    assert row["status"] == JobStatus.STAGED, row
    assert (row["digest"], row["bytes"]) == (DIGEST, SIZE)
    assert "recovered.store_outage" in row["notes"] and row["owner"] is None
    assert queue.worker.running and queue.worker._thread is worker_thread  # the same worker, never restarted
    downloads = fp.requests("civitai_cdn", "/model/*")
    assert len(downloads) == 2 and downloads[-1].headers.get("range", "").startswith("bytes=")
    assert downloads[-1].headers["range"] != "bytes=0-"  # resumed from the partial file it kept
    paused = [r for r in caplog.records if "ingest worker paused" in r.getMessage()]
    assert len(paused) == 1 and paused[0].levelno == logging.WARNING  # one warning per outage
    assert any("ingest worker resumed" in r.getMessage() for r in caplog.records)
    events = [(topic, json.loads(data)) for topic, data in queue.db.query("SELECT topic, data FROM events ORDER BY id")]
    mine = [(topic, data["status"]) for topic, data in events if data.get("job_id") == job["job_id"]]
    assert mine[0] == ("on_asset_ingest_enqueued", "queued")
    statuses = [status for _topic, status in mine]
    # claimed, put back after the outage, claimed again, staged: every change reached the log
    assert statuses[-1] == "staged"
    back = statuses.index("queued", 1)
    assert "downloading" in statuses[1:back] and "downloading" in statuses[back:]
