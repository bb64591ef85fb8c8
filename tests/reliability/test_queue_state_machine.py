"""Stateful fuzzing of the ingest queue: enqueue / apply / release / retry / cancel / remove in any order.

A small model (which digests are staged, which are registered, which asset paths are taken)
predicts every outcome; after each step the real queue must agree with it:

* statuses are legal and equal the model's (no job lost, none changed behind our back);
* dedup: a digest already staged -> ``duplicate`` + ``dedup_of``; already registered ->
  ``duplicate`` + ``existing_uid``; released / failed / cancelled jobs never block;
* one staged job per digest at most; staged jobs own a staging file with their digest,
  other jobs own none; ``summary()`` counts the same jobs; the registry holds the model's assets.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from comfyvn.config import init_workspace, update_config, workspace
from comfyvn.ingest.errors import InvalidTransitionError
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.store import forget_database

from .fuzzkit import count, fuzz_settings

CONTENTS = [f"content {i}\n".encode() * (i + 1) for i in range(4)]  # few contents: duplicates are common
NAMES = ["a.bin", "b.bin", "c.bin"]  # few names: different bytes compete for one asset path
TYPE = "misc"
LEGAL = {"queued", "downloading", "staged", "applying", "applied", "duplicate", "failed", "released", "cancelled"}


class QueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    #: makes a fresh store URL per machine (COMFYVN_TEST_STORE=postgresql), else the workspace's SQLite file
    fresh_store: Callable[[], str] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="comfyvn-qsm-"))
        self.ws = init_workspace(workspace(self.tmp / "ws"))
        update_config({"ingest": {"allowed_source_roots": [str(self.ws.root)]}}, self.ws)
        if self.fresh_store is not None:
            update_config({"store": {"url": self.fresh_store()}}, self.ws)
        self.queue = AssetIngestQueue(self.ws)
        assert self.fresh_store is None or self.queue.db.engine == "postgresql"  # the store it was given
        self.reg = self.queue.registry()
        self.model: dict[str, dict] = {}  # job_id -> {"status", "digest", "rel", "source"}
        self.registered: dict[str, str] = {}  # digest -> uid
        self.paths: dict[str, str] = {}  # asset rel path -> digest
        self.n = 0

    def teardown(self) -> None:
        forget_database(self.queue.db.url)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ helpers
    def _staged_job(self, digest: str) -> str | None:
        return next((j for j, m in self.model.items() if m["digest"] == digest and m["status"] == "staged"), None)

    def _settle(self, job_id: str, digest: str) -> tuple[str, dict]:
        """What fresh bytes become: staged, or a duplicate of a staged job / an asset."""
        other = self._staged_job(digest)
        if other is not None and other != job_id:
            return "duplicate", {"dedup_of": other}
        if digest in self.registered:
            return "duplicate", {"existing_uid": self.registered[digest]}
        return "staged", {}

    def _check_job(self, job: dict, status: str, extra: dict) -> None:
        assert job["status"] == status, (job["status"], status, job.get("error"), job.get("notes"))
        for key, value in extra.items():
            assert job[key] == value, (key, job[key], value)

    # ------------------------------------------------------------------ rules
    @rule(target=jobs, content=st.integers(0, len(CONTENTS) - 1), name=st.sampled_from(NAMES))
    def enqueue(self, content: int, name: str):
        count("queue_state_machine.steps")
        self.n += 1
        src = self.ws.root / "incoming" / str(self.n) / name
        src.parent.mkdir(parents=True)
        src.write_bytes(CONTENTS[content])
        digest = hashlib.sha256(CONTENTS[content]).hexdigest()
        job = self.queue.enqueue(source_path=str(src), asset_type_hint=TYPE)
        status, extra = self._settle(job["job_id"], digest)
        self._check_job(job, status, extra)
        assert job["digest"] == digest
        self.model[job["job_id"]] = {"status": status, "digest": digest, "rel": f"{TYPE}/{name}", "source": src}
        return job["job_id"]

    def _expect_apply(self, job_id: str) -> tuple[str, str]:
        """(apply() bucket, status afterwards) for one job, updating the model."""
        m = self.model[job_id]
        if m["status"] != "staged":
            return "skipped", m["status"]
        taken = self.paths.get(m["rel"])
        if taken is not None and taken != m["digest"]:
            return "failed", "failed"  # a different file already lies at the asset path
        self.registered[m["digest"]] = m["digest"][:16]
        self.paths[m["rel"]] = m["digest"]
        return "applied", "applied"

    @rule(picked=st.lists(jobs, max_size=4, unique=True), unknown=st.booleans())
    def apply_some(self, picked: list[str], unknown: bool):
        count("queue_state_machine.steps")
        ids = picked + (["nope-" + str(self.n)] if unknown else [])
        expected = {}
        for job_id in picked:
            expected[job_id] = self._expect_apply(job_id)
        result = self.queue.apply(ids)
        assert result["unknown"] == (["nope-" + str(self.n)] if unknown else [])
        for bucket in ("applied", "failed", "skipped"):
            got = {j["job_id"] for j in result[bucket]}
            assert got == {j for j, (b, _) in expected.items() if b == bucket}, (bucket, got, expected)
        for job_id, (_, status) in expected.items():
            self.model[job_id]["status"] = status

    @rule()
    def apply_all(self):
        count("queue_state_machine.steps")
        staged = [j for j, m in self.model.items() if m["status"] == "staged"]
        expected = {j: self._expect_apply(j) for j in staged}
        result = self.queue.apply()
        assert {j["job_id"] for j in result["applied"]} == {j for j, (b, _) in expected.items() if b == "applied"}
        assert {j["job_id"] for j in result["failed"]} == {j for j, (b, _) in expected.items() if b == "failed"}
        for job_id, (_, status) in expected.items():
            self.model[job_id]["status"] = status

    @rule()
    def apply_nothing(self):
        count("queue_state_machine.steps")
        assert self.queue.apply([]) == {"applied": [], "failed": [], "skipped": [], "unknown": []}

    @rule(job_id=jobs)
    def release(self, job_id: str):
        count("queue_state_machine.steps")
        m = self.model[job_id]
        if m["status"] in ("staged", "duplicate", "failed", "released"):
            self._check_job(self.queue.release(job_id), "released", {})
            m["status"] = "released"
        else:
            with pytest.raises(InvalidTransitionError):
                self.queue.release(job_id)

    @rule(job_id=jobs)
    def cancel(self, job_id: str):
        count("queue_state_machine.steps")
        m = self.model[job_id]
        if m["status"] in ("staged", "cancelled"):
            self._check_job(self.queue.cancel(job_id), "cancelled", {})
            m["status"] = "cancelled"
        else:
            with pytest.raises(InvalidTransitionError):
                self.queue.cancel(job_id)

    @rule(job_id=jobs)
    def retry(self, job_id: str):
        count("queue_state_machine.steps")
        m = self.model[job_id]
        if m["status"] in ("failed", "cancelled"):  # re-staged from the kept file or from the source
            status, extra = self._settle(job_id, m["digest"])
            self._check_job(self.queue.retry(job_id), status, extra)
            m["status"] = status
        else:
            with pytest.raises(InvalidTransitionError):
                self.queue.retry(job_id)

    @rule(job_id=consumes(jobs))
    def remove_applied_asset(self, job_id: str):
        """Removing an applied job's asset frees its digest and path for later enqueues."""
        count("queue_state_machine.steps")
        m = self.model[job_id]
        if m["status"] != "applied" or m["digest"] not in self.registered:
            return
        self.reg.remove_asset(self.registered.pop(m["digest"]), delete_files=True)
        self.paths.pop(m["rel"], None)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def queue_agrees_with_model(self):
        jobs = {j["job_id"]: j for j in self.queue.list_jobs(limit=1000)}
        assert set(jobs) == set(self.model), "a job was lost or appeared"
        staged_digests: list[str] = []
        for job_id, m in self.model.items():
            job = jobs[job_id]
            assert job["status"] in LEGAL
            assert job["status"] == m["status"], (job_id, job["status"], m["status"], job.get("error"))
            staging = Path(job["staging_path"]) if job["staging_path"] else None
            if job["status"] == "staged":
                staged_digests.append(job["digest"])
                assert staging is not None and staging.is_file(), job
                assert hashlib.sha256(staging.read_bytes()).hexdigest() == job["digest"]
            elif job["status"] != "failed":
                assert staging is None or not staging.exists(), job
                assert not self.queue.job_dir(job_id).exists(), f"{job['status']} job {job_id} kept its staging folder"
        assert len(staged_digests) == len(set(staged_digests)), "one digest staged twice"
        summary = self.queue.summary()
        assert summary["total"] == len(self.model)
        for status in LEGAL:
            assert summary["counts"][status] == sum(1 for m in self.model.values() if m["status"] == status)
        assert set(self.queue.dedup_snapshot()) == set(staged_digests)

    @invariant()
    def registry_agrees_with_model(self):
        assets = {a["hash"]: a for a in self.reg.iter_assets()}
        assert set(assets) == set(self.registered)
        for digest, rec in assets.items():
            assert rec["uid"] == self.registered[digest]
            assert Path(rec["abs_path"]).is_file() and Path(rec["sidecar"]).is_file()


@pytest.fixture(autouse=True)
def store_per_machine(request, monkeypatch):
    """On a ``COMFYVN_TEST_STORE=postgresql`` run each machine's workspace gets a fresh schema of the session's server."""
    if os.environ.get("COMFYVN_TEST_STORE", "sqlite") == "postgresql":
        monkeypatch.setattr(QueueMachine, "fresh_store", staticmethod(request.getfixturevalue("pg_store_schemas")))


QueueMachine.TestCase.settings = fuzz_settings(20, stateful_step_count=25)
test_queue_state_machine = QueueMachine.TestCase
