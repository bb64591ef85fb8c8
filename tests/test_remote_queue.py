"""Remote pulls through the real ingest queue, against the fake providers (the queue <-> remote contract)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from comfyvn_server_ext.handlers.base import error_row

from comfyvn.config import update_config
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest.errors import IngestError
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.studio.core.asset_registry import AssetRegistry
from tests.fakes import CIVITAI_VERSION_ID, HF_GATED_REPO, FakeProviders, Payload
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


# ---------------------------------------------------------------------------- real shapes, end to end
REAL = Path(__file__).parent / "fixtures" / "providers" / "real"


def _real(name: str) -> dict:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


def _apply(q, job_id: str, ws) -> dict:
    [applied] = q.apply([job_id])["applied"]
    return AssetRegistry(ws=ws).get_asset(applied["asset_uid"])


def test_lora_pull_merges_the_model_terms_creator_and_tags_then_applies(q, provider_servers, ws):
    job = q.enqueue("civitai", remote_url=f"civitai:{CIVITAI_VERSION_ID}", terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    meta = job["metadata"]
    assert job["status"] == "staged" and meta["author"] == "fixture_inkmaker" and "style" in meta["tags"]
    assert (meta["asset_type"], meta["folder"]) == ("lora", "loras")
    assert meta["license_terms"]["commercial_use"] == "rent-civit" and meta["license_terms"]["source"] == "provider"
    assert meta["license_terms"]["base_model_license"] == "openrail++"
    asset = _apply(q, job["job_id"], ws)
    assert Path(asset["abs_path"]).read_bytes() == provider_servers.civitai_file(1094417).all_bytes()


def test_checkpoint_with_fp16_fp32_twins_pulls_the_primary_file_then_applies(q, provider_servers, ws):
    fp = provider_servers
    model = _real("civitai/model-4468-checkpoint-2024.json")  # v3.0: fp32 twin listed before the primary fp16
    made = fp.add_real_civitai_model(model, sizes={41079: 300_003})
    [fp32, fp16] = model["modelVersions"][0]["files"]
    assert fp32["name"] == fp16["name"] and fp16["primary"] and not fp32.get("primary")
    job = q.enqueue("civitai", remote_url="https://civitai.com/models/4468", terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    want = made[int(fp16["id"])]
    assert job["status"] == "staged", job
    assert job["digest"] == want.sha256 and job["bytes"] == want.size
    meta = job["metadata"]
    assert meta["author"] == "rqdwdw" and meta["tags"] == ["anime", "base model"] and meta["nsfw"] is True
    assert (meta["asset_type"], meta["folder"], meta["file"]["fp"]) == ("checkpoint", "checkpoints", "fp16")
    assert meta["license_terms"]["commercial_use"] == "rent-civit"
    assert meta["license_terms"]["base_model_license"] == "creativeml-openrail-m"
    asset = _apply(q, job["job_id"], ws)
    assert Path(asset["abs_path"]).read_bytes() == want.all_bytes()
    assert asset["path"].endswith("counterfeitV30_v30.safetensors")


def test_sizekb_rounded_in_json_still_checks_the_size(q, provider_servers):
    fp = provider_servers
    model = _real("civitai/model-7371-checkpoint-2024.json")
    primary = next(f for f in model["modelVersions"][0]["files"] if f.get("primary"))
    made = fp.add_real_civitai_model(model, sizes={int(primary["id"]): 123_457})  # 120.56 KiB in the JSON
    assert round(120.56 * 1024) != 123_457  # the published size is off by a few bytes
    job = q.enqueue("civitai", remote_url="https://civitai.com/models/7371", terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "staged" and job["bytes"] == 123_457
    assert job["digest"] == made[int(primary["id"])].sha256
    assert job["metadata"]["file"]["size"] == round(120.56 * 1024)  # what Civitai published


def test_version_of_a_hidden_model_is_still_pulled(q, provider_servers):
    fp = provider_servers
    payload = fp.add_real_civitai_version(_real("civitai/model-version-1421739-helper-2025.json"))
    job = q.enqueue("civitai", remote_url="civitai:1421739", terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "staged" and job["digest"] == payload.sha256
    assert job["metadata"]["nsfw"] is True and job["metadata"]["license_terms"]["source"] is None


def test_hugging_face_repo_without_organisation_pulls_from_the_canonical_repo(q, provider_servers, ws):
    fp = provider_servers
    payload = Payload(seed=b"real-shape bert weights\n", size=200_000, filename="model.safetensors")
    fp.add_real_hf_repo(_real("huggingface/model-google-bert-bert-base-uncased.json"),
                        {"model.safetensors": payload}, alias="bert-base-uncased")
    url = "https://huggingface.co/bert-base-uncased/resolve/main/model.safetensors"
    job = q.enqueue("huggingface", remote_url=url, terms_acknowledged=True)
    q.run_pending(timeout=30)
    job = q.get(job["job_id"])
    assert job["status"] == "staged", job
    assert job["digest"] == payload.sha256 and job["bytes"] == payload.size
    meta = job["metadata"]
    assert meta["title"] == "google-bert/bert-base-uncased" and meta["license"] == "apache-2.0"
    assert meta["license_terms"]["commercial_use"] == "sell" and meta["license_terms"]["credit_required"] is True
    assert meta["file"]["sha256"] == payload.sha256
    assert any("/google-bert/bert-base-uncased/resolve/" in r.path for r in fp.requests("hf"))
    asset = _apply(q, job["job_id"], ws)
    assert Path(asset["abs_path"]).read_bytes() == payload.all_bytes()


@pytest.mark.parametrize("provider, url, words", [
    ("civitai", "https://civitai.com:0/api/download/models/1", "invalid port"),
    ("civitai", "https://civitai.com:65536/api/download/models/1", "invalid port"),
    ("huggingface", "https://huggingface.co:abc/org/repo/resolve/main/x.safetensors", "invalid port"),
    ("civitai", "https://civitai.com/models/1?q=" + "a" * 2100, "the limit is 2048"),
    ("huggingface", "https://huggingface.co/org/repo/resolve/main/" + "a" * 2100, "the limit is 2048"),
    ("generic", "https://civitai.com:99999/file.bin", "invalid port"),  # every provider, not only the two named
    ("auto", "https://huggingface.co:0/org/repo/resolve/main/x.bin", "invalid port"),
])
def test_bad_ports_and_overlong_urls_are_refused_at_enqueue(q, provider, url, words):
    with pytest.raises(IngestError, match=words) as err:
        q.enqueue(provider, remote_url=url, terms_acknowledged=True)
    assert err.value.code == "remote.bad_url" and error_row(err.value).status == 400
    assert q.list_jobs() == []  # nothing half-made


# ---------------------------------------------------------------------------- written behind, made durable by apply
def _fsynced_paths(monkeypatch) -> list[str]:
    """Record the path of every file ``os.fsync`` is called on (from now until the test ends)."""
    import os

    real = os.fsync
    synced: list[str] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_pull_is_staged_written_behind_and_apply_makes_it_durable(q, provider_servers, ws, monkeypatch):
    from comfyvn.fsutil import boot_id

    synced = _fsynced_paths(monkeypatch)
    job = q.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
    q.run_pending(timeout=30)
    row = q.jobs.get(job["job_id"])
    assert row["status"] == "staged" and row["staged_boot"] == boot_id() is not None
    part = q.part_file(job["job_id"])
    assert str(part) not in synced and row["staging_path"] not in synced  # the pull did not wait for the disk
    [applied] = q.apply([job["job_id"]])["applied"]
    assert row["staging_path"] in synced  # the bytes reached the disk before the asset row committed
    asset = AssetRegistry(ws=ws).get_asset(applied["asset_uid"])
    assert Path(asset["abs_path"]).stat().st_size == row["bytes"]


def test_without_a_boot_id_a_pull_is_fsynced_before_it_is_staged(q, provider_servers, monkeypatch):
    import comfyvn.ingest.worker as worker_module

    monkeypatch.setattr(worker_module, "boot_id", lambda: None)
    synced = _fsynced_paths(monkeypatch)
    job = q.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
    q.run_pending(timeout=30)
    row = q.jobs.get(job["job_id"])
    assert row["status"] == "staged" and row["staged_boot"] is None
    assert str(q.part_file(job["job_id"])) in synced  # durable before the row refers to it


@pytest.mark.parametrize("damaged", [False, True])
def test_a_pull_staged_before_a_machine_restart_is_hashed_again_at_apply(q, provider_servers, damaged):
    job = q.enqueue("civitai", remote_url=FakeProviders.civitai_model_page(), terms_acknowledged=True)
    q.run_pending(timeout=30)
    staged = q.get(job["job_id"])
    with q.db.transaction() as conn:  # as if pulled in an earlier boot of the machine
        conn.execute("UPDATE ingest_jobs SET staged_boot = 'an-earlier-boot' WHERE job_id = ?", (job["job_id"],))
    if damaged:  # the page cache never reached the disk
        Path(staged["staging_path"]).write_bytes(b"\0" * staged["bytes"])
    result = q.apply([job["job_id"]])
    if not damaged:
        assert [j["job_id"] for j in result["applied"]] == [job["job_id"]]
        return
    [failed] = result["failed"]
    assert failed["error"].startswith("Staged bytes no longer match their digest")
    assert not Path(staged["staging_path"]).exists() and AssetRegistry(ws=q.ws).count() == 0
    q.retry(job["job_id"])  # pulled again
    q.run_pending(timeout=30)
    again = q.get(job["job_id"])
    assert again["status"] == "staged" and again["digest"] == staged["digest"]
    assert hashlib.sha256(Path(again["staging_path"]).read_bytes()).hexdigest() == staged["digest"]
