"""Remote pulls through the real ingest queue, against the fake providers (the queue <-> remote contract)."""

from __future__ import annotations

import json

import pytest

from comfyvn.config import update_config
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.queue import AssetIngestQueue
from tests.fakes import CIVITAI_VERSION_ID, HF_GATED_REPO, FakeProviders
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401


@pytest.fixture
def q(ws, provider_servers, monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 100}}, ws)
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()


def test_civitai_pull_is_staged_with_the_published_hash_then_deduped_before_download(q, provider_servers):
    fp = provider_servers
    job = q.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "staged", job
    assert job["digest"] == "5aa7e63d24217f0d43de816446389fe5e45ae125274f8f0702638689470e5cc9"
    assert job["bytes"] == 2731337
    assert len(fp.requests("civitai_cdn")) == 1

    again = q.enqueue("civitai", remote_url=f"https://civitai.com/api/download/models/{CIVITAI_VERSION_ID}",
                      terms_acknowledged=True)
    q.run_pending(timeout=30)
    again = q.get(again["job_id"])
    assert again["status"] == "duplicate" and again["dedup_of"] == job["job_id"]
    assert len(fp.requests("civitai_cdn")) == 1  # known by its published SHA256: nothing downloaded


def test_gated_pull_fails_with_the_actionable_message_and_no_token_anywhere(q, provider_servers, monkeypatch, ws):
    fp = provider_servers
    url = FakeProviders.hf_resolve_url("heroine_ckpt_v1.safetensors", repo=HF_GATED_REPO)
    job = q.enqueue("huggingface", remote_url=url, terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "failed"
    assert "requires a Hugging Face token with access: set HF_TOKEN" in job["error"]

    monkeypatch.setenv("HF_TOKEN", fp.hf_token)
    q.retry(job["job_id"])
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "staged", job
    events = get_hook_bus(q.db).history(limit=1000)
    assert any(e["event"] == "on_asset_ingest_failed" for e in events)
    log = ws.logs_dir / "server.log"
    dump = json.dumps([job, q.export_state(), events], default=str) + (log.read_text() if log.exists() else "")
    assert fp.hf_token not in dump
