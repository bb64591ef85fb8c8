"""The ingest queue: local staging, dedup, apply, transitions, listing, hooks and remote jobs
(with a small in-process remote API standing in for comfyvn.ingest.remote)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from comfyvn_server_ext.handlers.base import error_row

from comfyvn.config import set_feature, update_config
from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import (
    DEFAULT_RATE_LIMIT,
    MAX_REMOTE_BYTES,
    STATE_VERSION,
    AssetIngestQueue,
    IngestError,
    InvalidTransitionError,
    JobNotFoundError,
    RateLimitedError,
    RemoteError,
    SourceNotAllowedError,
    TermsNotAcknowledgedError,
    get_ingest_queue,
)
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry

SEED_PAYLOAD_KEYS = {"job_id", "provider", "status", "digest", "asset_type_hint", "notes"}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def events(ws, topic: str | None = None) -> list[dict]:
    return get_hook_bus(open_store(ws)).history(1000, topics=[topic] if topic else ["on_asset_ingest_*"])


@pytest.fixture
def q(ws):
    queue = AssetIngestQueue(ws)
    yield queue
    queue.stop_worker()
    AssetRegistry.wait_for_thumbnails(10)


# ---------------------------------------------------------------------------- constants
def test_public_constants():
    assert DEFAULT_RATE_LIMIT == pytest.approx(0.33)
    assert MAX_REMOTE_BYTES == 200 * 1024 * 1024
    assert isinstance(STATE_VERSION, int) and STATE_VERSION >= 2


# ---------------------------------------------------------------------------- local staging
def test_local_enqueue_stages_a_hashed_copy_and_emits_the_seed_payload(ws, q):
    data = os.urandom(300_000)
    src = write(ws.root / "incoming" / "hero.png", data)
    job = q.enqueue(source_path=src, metadata={"tags": "Hero, portrait", "nsfw": "false"},
                    asset_type_hint="characters")
    assert job["status"] == "staged"
    assert job["digest"] == sha(data) and job["bytes"] == len(data)
    staged = Path(job["staging_path"])
    assert staged.parent == ws.staging_dir and staged.name == f"{job['job_id']}-hero.png"
    assert staged.read_bytes() == data
    assert src.read_bytes() == data  # the source is left alone
    assert not [p for p in staged.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    assert job["metadata"]["tags"] == ["hero", "portrait"] and job["metadata"]["nsfw"] is False
    assert job["attempts"] == 1 and job["errors"] == [] and job["notes"] == []
    [env] = events(ws, "on_asset_ingest_enqueued")
    assert SEED_PAYLOAD_KEYS <= set(env["data"])
    assert {k: env["data"][k] for k in SEED_PAYLOAD_KEYS} == {
        "job_id": job["job_id"], "provider": "local", "status": "staged", "digest": sha(data),
        "asset_type_hint": "characters", "notes": []}


def test_a_big_file_is_staged_byte_exact_with_its_digest(ws, q):
    from comfyvn.hashing import LARGE_FILE

    data = os.urandom(LARGE_FILE + 3 * 1024 * 1024 + 17)  # takes the pipelined copy
    job = q.enqueue(source_path=write(ws.root / "big.safetensors", data))
    assert job["digest"] == sha(data) and job["bytes"] == len(data)
    assert Path(job["staging_path"]).read_bytes() == data


def test_source_outside_allowed_roots_is_refused(ws, q, tmp_path):
    outside = write(tmp_path / "outside" / "secret.png", b"nope")
    with pytest.raises(SourceNotAllowedError) as err:
        q.enqueue(source_path=outside)
    assert "allowed_source_roots" in str(err.value) and str(outside) in str(err.value)
    link = ws.root / "innocent.png"
    link.symlink_to(outside)
    with pytest.raises(SourceNotAllowedError, match="symlink"):
        q.enqueue(source_path=link)
    assert q.list_jobs() == [] and events(ws) == []


def test_allowed_source_roots_are_configurable_and_expand_home(ws, q, tmp_path, monkeypatch):
    extra = tmp_path / "library"
    src = write(extra / "a.wav", b"RIFF....")
    update_config({"ingest": {"allowed_source_roots": ["$COMFYVN_HOME", str(extra)]}}, ws)
    assert q.enqueue(source_path=src)["status"] == "staged"
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    update_config({"ingest": {"allowed_source_roots": ["~/art"]}}, ws)
    assert q.allowed_source_roots() == [(home / "art").resolve()]
    inside_home = write(home / "art" / "b.png", b"b")
    assert q.enqueue(source_path=inside_home)["status"] == "staged"
    with pytest.raises(SourceNotAllowedError):  # the workspace is no longer listed
        q.enqueue(source_path=write(ws.root / "c.png", b"c"))


def test_bad_local_input_gives_clear_errors(ws, q):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        q.enqueue(source_path=ws.root / "missing.png")
    (ws.root / "folder").mkdir()
    with pytest.raises(IngestError, match="not a regular file"):
        q.enqueue(source_path=ws.root / "folder")
    src = write(ws.root / "x.png", b"x")
    with pytest.raises(ValueError, match="exactly one"):
        q.enqueue(source_path=src, remote_url="https://civitai.com/api/download/models/1")
    with pytest.raises(ValueError, match="exactly one"):
        q.enqueue()
    with pytest.raises(ValueError, match="unknown provider"):
        q.enqueue("dropbox", source_path=src)
    with pytest.raises(ValueError, match="asset_type_hint"):
        q.enqueue(source_path=src, asset_type_hint="../etc")
    with pytest.raises(ValueError, match="dest_relative"):
        q.enqueue(source_path=src, dest_relative="../../outside.png")
    with pytest.raises(ValueError, match="metadata"):
        q.enqueue(source_path=src, metadata=["not", "a", "dict"])
    assert q.list_jobs() == []


# ---------------------------------------------------------------------------- dedup
def test_duplicate_of_a_staged_job(ws, q):
    data = b"same bytes" * 1000
    first = q.enqueue(source_path=write(ws.root / "a.bin", data))
    second = q.enqueue("generic", source_path=write(ws.root / "copy.bin", data))
    assert second["status"] == "duplicate" and second["dedup_of"] == first["job_id"]
    assert second["notes"] == ["duplicate.staged"] and second["staging_path"] is None
    assert q.job_files(second["job_id"]) == []  # its copy was dropped
    enq = events(ws, "on_asset_ingest_enqueued")
    assert [e["data"]["status"] for e in enq] == ["staged", "duplicate"]  # duplicates announce too
    assert enq[1]["data"]["notes"] == ["duplicate.staged"]


def test_duplicate_of_a_registered_asset(ws, q):
    data = b"registered already"
    rec = AssetRegistry(ws=ws).register_file(write(ws.root / "r.txt", data), "docs")
    job = q.enqueue(source_path=write(ws.root / "again.txt", data))
    assert job["status"] == "duplicate" and job["existing_uid"] == rec["uid"]
    assert job["notes"] == ["duplicate.registry"] and job["dedup_of"] is None


@pytest.mark.parametrize("end", ["release", "cancel", "fail"])
def test_released_cancelled_or_failed_jobs_never_block_the_same_bytes(ws, q, end):
    data = f"content for {end}".encode()
    src = write(ws.root / "f.bin", data)
    first = q.enqueue(source_path=src)
    if end == "release":
        q.release(first["job_id"])
    elif end == "cancel":
        q.cancel(first["job_id"])
    else:
        Path(first["staging_path"]).unlink()
        assert q.apply([first["job_id"]])["failed"][0]["status"] == "failed"
    again = q.enqueue(source_path=src)
    assert again["status"] == "staged" and again["dedup_of"] is None


# ---------------------------------------------------------------------------- apply
def test_apply_moves_the_staged_file_by_rename_and_writes_row_sidecar_and_provenance(ws, q):
    data = os.urandom(50_000)
    job = q.enqueue("civitai", {"title": "Aya", "tags": ["heroine"], "license": "cc-by-4.0",
                                "character": "aya"}, source_path=write(ws.root / "aya.safetensors", data),
                    terms_acknowledged=True, pin=True)
    staged = Path(job["staging_path"])
    inode = staged.stat().st_ino
    result = q.apply()
    assert [j["job_id"] for j in result["applied"]] == [job["job_id"]]
    assert result["failed"] == result["skipped"] == result["unknown"] == []
    done = q.get(job["job_id"])
    assert done["status"] == "applied" and done["asset_uid"] == sha(data)[:16]
    assert done["pin"] is False and done["staging_path"] is None
    assert not staged.exists() and q.job_files(job["job_id"]) == []
    reg = AssetRegistry(ws=ws)
    asset = reg.get_asset(done["asset_uid"])
    final = Path(asset["abs_path"])
    assert final.read_bytes() == data and final.stat().st_ino == inode  # renamed, never copied
    assert asset["type"] == "models" and asset["path"] == "models/aya.safetensors"
    assert asset["tags"] == ["heroine"] and asset["license"] == "cc-by-4.0"
    assert asset["meta"]["title"] == "Aya" and asset["meta"]["character"] == "aya"
    side = reg.read_sidecar(asset["uid"])
    assert side["provenance"]["provider"] == "civitai"
    assert side["provenance"]["digest"] == sha(data)
    assert side["provenance"]["terms_acknowledged"] is True
    assert side["provenance"]["source"] == str((ws.root / "aya.safetensors").resolve())
    [env] = events(ws, "on_asset_ingest_applied")
    assert env["data"]["asset_uid"] == asset["uid"] and env["data"]["path"] == str(final)
    assert SEED_PAYLOAD_KEYS <= set(env["data"])
    registered = events(ws, "on_asset_registered")
    assert registered and registered[-1]["id"] < env["id"]  # registry row and sidecar come first


def test_apply_type_override_dest_relative_and_type_guess(ws, q):
    a = q.enqueue(source_path=write(ws.root / "a.wav", b"a"), dest_relative="voices/")
    b = q.enqueue(source_path=write(ws.root / "b.png", b"b"), dest_relative="bg/night.png")
    c = q.enqueue(source_path=write(ws.root / "c.txt", b"c"))
    q.apply([a["job_id"]], asset_type_override="voice")
    q.apply([b["job_id"], c["job_id"]])
    reg = AssetRegistry(ws=ws)
    got = {j: reg.get_asset(q.get(j)["asset_uid"]) for j in (a["job_id"], b["job_id"], c["job_id"])}
    assert (got[a["job_id"]]["type"], got[a["job_id"]]["path"]) == ("voice", "voices/a.wav")
    assert (got[b["job_id"]]["type"], got[b["job_id"]]["path"]) == ("images", "bg/night.png")
    assert (got[c["job_id"]]["type"], got[c["job_id"]]["path"]) == ("misc", "misc/c.txt")
    with pytest.raises(ValueError, match="asset_type_override"):
        q.apply(asset_type_override="Bad Type")


def test_apply_empty_list_applies_nothing_and_unknown_ids_are_reported(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"a"))
    assert q.apply(job_ids=[]) == {"applied": [], "failed": [], "skipped": [], "unknown": []}
    assert q.get(job["job_id"])["status"] == "staged"
    result = q.apply(["nope", job["job_id"], "nope2"])
    assert result["unknown"] == ["nope", "nope2"] and len(result["applied"]) == 1
    again = q.apply([job["job_id"]])
    assert again["skipped"][0]["status"] == "applied" and again["applied"] == []
    with pytest.raises(ValueError, match="list"):
        q.apply(job["job_id"])


def test_missing_staging_file_fails_the_job(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"gone soon"), pin=True)
    Path(job["staging_path"]).unlink()
    result = q.apply()
    [failed] = result["failed"]
    assert failed["status"] == "failed" and failed["error"] == "Staging file missing"
    assert failed["errors"][0]["error"] == "Staging file missing" and failed["errors"][0]["attempt"] == 1
    assert failed["pin"] is False
    [env] = events(ws, "on_asset_ingest_failed")
    assert env["data"]["error"] == "Staging file missing" and env["data"]["job_id"] == job["job_id"]
    assert AssetRegistry(ws=ws).count() == 0


def test_apply_failure_keeps_the_staged_file_for_a_retry(ws, q):
    reg = AssetRegistry(ws=ws)
    write(reg.assets_root / "misc" / "clash.txt", b"somebody else's file")
    job = q.enqueue(source_path=write(ws.root / "clash.txt", b"mine"))
    [failed] = q.apply()["failed"]
    assert failed["status"] == "failed" and "AssetCollisionError" in failed["error"]
    assert Path(failed["staging_path"]).read_bytes() == b"mine"
    retried = q.retry(job["job_id"])
    assert retried["status"] == "staged" and retried["attempts"] == 2 and retried["error"] is None
    assert retried["errors"][0]["attempt"] == 1  # the history of failures is kept
    [applied] = q.apply([job["job_id"]], asset_type_override="docs")["applied"]
    assert applied["status"] == "applied"


# ---------------------------------------------------------------------------- transitions
def test_release_deletes_staging_and_pin_and_refuses_applied(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"a"), pin=True)
    assert q.dedup_snapshot()[job["digest"]]["pinned"] is True
    released = q.release(job["job_id"])
    assert released["status"] == "released" and released["pin"] is False
    assert q.job_files(job["job_id"]) == [] and q.dedup_snapshot() == {}
    assert q.release(job["job_id"])["status"] == "released"  # idempotent
    other = q.enqueue(source_path=write(ws.root / "b.bin", b"b"))
    q.apply([other["job_id"]])
    with pytest.raises(InvalidTransitionError, match="applied.*remove_asset"):
        q.release(other["job_id"])
    dup = q.enqueue(source_path=write(ws.root / "b2.bin", b"b"))
    assert q.release(dup["job_id"])["status"] == "released"
    with pytest.raises(JobNotFoundError) as err:
        q.release("missing")
    assert isinstance(err.value, KeyError) and "missing" in str(err.value)


def test_cancel_and_retry_of_a_local_job(ws, q):
    src = write(ws.root / "a.bin", b"cancel me")
    job = q.enqueue(source_path=src)
    cancelled = q.cancel(job["job_id"])
    assert cancelled["status"] == "cancelled" and q.job_files(job["job_id"]) == []
    with pytest.raises(InvalidTransitionError, match="only failed or cancelled"):
        q.retry(q.enqueue(source_path=write(ws.root / "b.bin", b"b"))["job_id"])
    back = q.retry(job["job_id"])  # re-staged from source_path at once
    assert back["status"] == "staged" and back["attempts"] == 2 and Path(back["staging_path"]).read_bytes() == b"cancel me"
    q.apply([job["job_id"]])
    with pytest.raises(InvalidTransitionError, match="only queued, downloading or staged"):
        q.cancel(job["job_id"])
    statuses = [e["data"]["status"] for e in events(ws) if e["data"]["job_id"] == job["job_id"]]
    assert statuses == ["staged", "cancelled", "queued", "downloading", "staged", "applying", "applied"]


def test_retry_of_a_failed_job_whose_source_vanished_fails_again_with_reason(ws, q):
    src = write(ws.root / "a.bin", b"short lived")
    job = q.enqueue(source_path=src)
    Path(job["staging_path"]).unlink()
    q.apply()
    src.unlink()
    again = q.retry(job["job_id"])
    assert again["status"] == "failed" and again["attempts"] == 2 and "does not exist" in again["error"]
    assert [e["attempt"] for e in again["errors"]] == [1, 2]


def test_prune_releases_old_unpinned_staged_jobs_only(ws, q):
    keep = q.enqueue(source_path=write(ws.root / "a.bin", b"a"), pin=True)
    drop = q.enqueue(source_path=write(ws.root / "b.bin", b"b"))
    assert q.prune(older_than=3600) == []
    pruned = q.prune(older_than=0)
    assert [j["job_id"] for j in pruned] == [drop["job_id"]]
    assert q.get(keep["job_id"])["status"] == "staged"


# ---------------------------------------------------------------------------- reading
def test_listing_paging_summary_and_get(ws, q):
    ids = [q.enqueue(source_path=write(ws.root / f"f{i}.bin", bytes([i]) * 10))["job_id"] for i in range(5)]
    q.enqueue("generic", source_path=write(ws.root / "dup.bin", bytes([0]) * 10))
    assert [j["job_id"] for j in q.list_jobs(limit=3, status="staged")] == ids[::-1][:3]
    assert [j["provider"] for j in q.list_jobs(provider="generic")] == ["generic"]
    page = q.page_jobs(limit=4)
    rest = q.page_jobs(limit=4, cursor=page["next_cursor"])
    assert len(page["items"]) == 4 and len(rest["items"]) == 2 and rest["next_cursor"] is None
    assert {j["job_id"] for j in page["items"] + rest["items"]} >= set(ids)
    s = q.summary()
    assert s["counts"]["staged"] == 5 and s["counts"]["duplicate"] == 1 and s["total"] == 6
    assert s["state_version"] == STATE_VERSION and s["rate_limits"]["civitai"]["rate"] == pytest.approx(0.33)
    assert q.get("nope") is None and q.get(ids[0])["job_id"] == ids[0]
    with pytest.raises(ValueError, match="unknown status"):
        q.list_jobs(status="weird")
    with pytest.raises(ValueError, match="limit"):
        q.list_jobs(limit=0)
    with pytest.raises(ValueError, match="cursor"):
        q.page_jobs(cursor="abc")


def test_one_queue_per_workspace_and_a_second_instance_sees_the_same_jobs(ws):
    assert get_ingest_queue(ws) is get_ingest_queue(ws)
    job = get_ingest_queue(ws).enqueue(source_path=write(ws.root / "a.bin", b"a"))
    assert AssetIngestQueue(ws).get(job["job_id"])["status"] == "staged"


# ---------------------------------------------------------------------------- remote jobs
@dataclass
class Plan:
    provider: str
    source_url: str
    download_url: str
    filename: str
    expected_sha256: str | None
    expected_size: int | None
    provider_metadata: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)


class FakeRemote:
    """Stands in for comfyvn.ingest.remote: serves ``bodies[url]`` or raises ``errors[url]``."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.errors: dict[str, list[RemoteError]] = {}
        self.publish_hash = True
        self.downloads: list[str] = []
        self.chunk = 1 << 16
        self.gate: threading.Event | None = None

    def plan_remote(self, provider, url, metadata, ws):
        body = self.bodies[url]
        return Plan(provider, url, url + "?signed=1", url.rsplit("/", 1)[-1],
                    sha(body) if self.publish_hash else None, len(body),
                    {"name": "Remote Model", "modelVersions": [{"id": 7, "baseModel": "SDXL 1.0", "files": []}],
                     "allowCommercialUse": "{Image,Sell}"})

    def download(self, plan, part_path, *, ws, max_bytes, progress=None, cancelled=None):
        self.downloads.append(plan.source_url)
        queued = self.errors.get(plan.source_url)
        if queued:
            raise queued.pop(0)
        body = self.bodies[plan.source_url]
        if len(body) > max_bytes:
            raise RemoteError("Remote asset exceeds size limit", code="too_large")
        with open(part_path, "wb") as fh:
            for start in range(0, len(body), self.chunk):
                if cancelled and cancelled():
                    raise RemoteError("download cancelled", code="cancelled")
                if self.gate is not None and start:
                    self.gate.wait(5)
                fh.write(body[start:start + self.chunk])
                if progress:
                    progress(start + len(body[start:start + self.chunk]), len(body))
        return sha(body), len(body)


@pytest.fixture
def remote(q, ws):
    fake = FakeRemote()
    q.worker.remote_api = fake
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 1000}}, ws)
    return fake


URL = "https://civitai.com/api/download/models/{}"


def test_remote_enqueue_queues_without_sleeping_and_the_worker_stages_it(ws, q, remote):
    body = os.urandom(200_000)
    remote.bodies[URL.format(1)] = body
    job = q.enqueue("civitai", {"tags": "lora"}, remote_url=URL.format(1), terms_acknowledged=True)
    assert job["status"] == "queued" and job["remote_url"] == URL.format(1)
    [done] = q.run_pending(timeout=10)
    assert done["status"] == "staged" and done["digest"] == sha(body) and done["bytes"] == len(body)
    assert Path(done["staging_path"]).read_bytes() == body and Path(done["staging_path"]).name == f"{job['job_id']}-1"
    assert done["metadata"]["title"] == "Remote Model" and done["metadata"]["tags"] == ["lora"]
    assert done["metadata"]["base_model"] == "SDXL 1.0" and done["metadata"]["license"] is None
    assert done["metadata"]["license_terms"]["allow_commercial_use"] == ["Image", "Sell"]
    progress = events(ws, "on_asset_ingest_progress")
    assert progress and progress[-1]["data"]["bytes_done"] == len(body) == progress[-1]["data"]["bytes_total"]
    [applied] = q.apply()["applied"]
    side = AssetRegistry(ws=ws).read_sidecar(applied["asset_uid"])
    assert side["provenance"]["source"] == URL.format(1)
    assert side["provenance"]["provider_metadata"]["name"] == "Remote Model"


def test_remote_pulls_need_terms_acknowledged_unless_the_flag_is_off(ws, q, remote):
    remote.bodies[URL.format(2)] = b"x"
    with pytest.raises(TermsNotAcknowledgedError, match="terms_acknowledged"):
        q.enqueue("civitai", remote_url=URL.format(2))
    assert q.list_jobs() == []
    set_feature("require_remote_terms_ack", False, ws)
    assert q.enqueue("civitai", remote_url=URL.format(2))["status"] == "queued"


def test_remote_url_checks(ws, q, remote):
    with pytest.raises(IngestError, match="allowlist"):
        q.enqueue("civitai", remote_url="https://evil.example/x", terms_acknowledged=True)
    with pytest.raises(ValueError, match="credentials"):
        q.enqueue("civitai", remote_url="https://user:pw@civitai.com/x", terms_acknowledged=True)
    with pytest.raises(IngestError, match="Not a Civitai URL") as err:
        q.enqueue("civitai", remote_url="ftp://civitai.com/x", terms_acknowledged=True)
    assert err.value.code == "remote.bad_url" and error_row(err.value).status == 400
    with pytest.raises(IngestError, match="not understood"):
        q.enqueue("civitai", remote_url="https://civitai.com/images/123", terms_acknowledged=True)
    with pytest.raises(ValueError, match="http"):
        q.enqueue("generic", remote_url="gopher://example.com/x", terms_acknowledged=True)
    short = q.enqueue("civitai", remote_url="civitai:1184630", terms_acknowledged=True)
    assert short["status"] == "queued" and short["remote_url"] == "civitai:1184630"
    hf = q.enqueue("hf", remote_url="hf://org/repo/model.safetensors", terms_acknowledged=True)
    assert hf["provider"] == "huggingface"
    secret = q.enqueue("civitai", remote_url="https://civitai.com/api/download/models/9?token=s3cret&type=Model",
                       terms_acknowledged=True)
    assert "s3cret" not in json.dumps(secret) and "url.token_removed" in secret["notes"]
    assert secret["remote_url"] == "https://civitai.com/api/download/models/9?type=Model"
    assert not any("s3cret" in json.dumps(e) for e in events(ws))
    with pytest.raises(IngestError, match="not on the generic allowlist"):
        q.enqueue(remote_url="https://evil.example/x")  # no provider claims the host
    job = q.enqueue(remote_url="https://huggingface.co/a/b/resolve/main/m.safetensors", terms_acknowledged=True)
    assert job["provider"] == "huggingface"  # inferred from the host


def test_predownload_dedup_by_published_hash(ws, q, remote):
    body = b"already here" * 100
    AssetRegistry(ws=ws).register_file(write(ws.root / "have.bin", body), "models")
    remote.bodies[URL.format(3)] = body
    q.enqueue("civitai", remote_url=URL.format(3), terms_acknowledged=True)
    [done] = q.run_pending(timeout=10)
    assert done["status"] == "duplicate" and done["existing_uid"] == sha(body)[:16]
    assert "duplicate.registry" in done["notes"] and "dedup.before_download" in done["notes"]
    assert remote.downloads == []  # not a byte was fetched


def test_same_url_queued_twice_is_a_duplicate(ws, q, remote):
    remote.bodies[URL.format(4)] = b"y"
    first = q.enqueue("civitai", remote_url=URL.format(4), terms_acknowledged=True)
    second = q.enqueue("civitai", remote_url=URL.format(4), terms_acknowledged=True)
    assert second["status"] == "duplicate" and second["dedup_of"] == first["job_id"]
    assert second["notes"] == ["duplicate.queued"]


def test_wait_true_pulls_now_or_raises_rate_limited_with_seconds(ws, q, remote):
    update_config({"ingest": {"rate_limit_rps": 0.01, "rate_limit_burst": 1}}, ws)
    remote.bodies[URL.format(5)] = b"first"
    remote.bodies[URL.format(6)] = b"second"
    done = q.enqueue("civitai", remote_url=URL.format(5), terms_acknowledged=True, wait=True)
    assert done["status"] == "staged" and done["digest"] == sha(b"first")
    with pytest.raises(RateLimitedError) as err:
        q.enqueue("civitai", remote_url=URL.format(6), terms_acknowledged=True, wait=True)
    assert 90 < err.value.retry_after <= 100 and err.value.to_dict()["error"] == "rate_limited"
    assert "try again in" in str(err.value)
    # without wait the same request is accepted and waits in the queue; no one sleeps
    job = q.enqueue("civitai", remote_url=URL.format(6), terms_acknowledged=True)
    assert job["status"] == "queued"
    assert q.run_pending(timeout=0) == [] and q.get(job["job_id"])["status"] == "queued"
    assert q.summary()["rate_limits"]["civitai"]["retry_after"] > 90


def test_the_worker_paces_jobs_by_the_bucket(ws, q, remote):
    update_config({"ingest": {"rate_limit_rps": 0.01, "rate_limit_burst": 2}}, ws)
    for i in range(10, 14):
        remote.bodies[URL.format(i)] = str(i).encode()
        q.enqueue("civitai", remote_url=URL.format(i), terms_acknowledged=True)
    done = q.run_pending(timeout=0)
    assert len(done) == 2  # the burst; the rest wait in the queue
    assert q.summary()["counts"]["queued"] == 2
    update_config({"ingest": {"providers": {"civitai": {"rate_limit_rps": 1000}}}}, ws)
    assert len(q.run_pending(timeout=5)) == 2  # a faster per-provider rate drains it


def test_upstream_429_requeues_with_retry_after_and_pauses_the_provider(ws, q, remote):
    remote.bodies[URL.format(20)] = b"busy"
    remote.bodies[URL.format(21)] = b"other"
    remote.errors[URL.format(20)] = [RemoteError("HTTP 429 Too Many Requests", code="rate_limited", status=429,
                                                 retry_after=120, retryable=True)]
    job = q.enqueue("civitai", remote_url=URL.format(20), terms_acknowledged=True)
    other = q.enqueue("civitai", remote_url=URL.format(21), terms_acknowledged=True)
    done = q.run_pending(timeout=0)
    assert [j["job_id"] for j in done] == [job["job_id"]]
    back = q.get(job["job_id"])
    assert back["status"] == "queued" and back["attempts"] == 2 and back["error"] == "HTTP 429 Too Many Requests"
    assert 110 < back["next_attempt_at"] - time.time() <= 120
    assert back["errors"][0]["auto_retry"] is True and "retry.scheduled" in back["notes"]
    assert q.get(other["job_id"])["status"] == "queued"  # the provider is paused for everyone
    assert q.summary()["rate_limits"]["civitai"]["retry_after"] > 110
    upd = [e for e in events(ws, "on_asset_ingest_updated") if e["data"]["job_id"] == job["job_id"]]
    assert upd[-1]["data"]["status"] == "queued" and upd[-1]["data"]["retry_in"] == 120


def test_retryable_errors_give_up_after_max_auto_retries(ws, q, remote):
    update_config({"ingest": {"max_auto_retries": 2}}, ws)
    url = URL.format(22)
    remote.bodies[url] = b"flaky"
    remote.errors[url] = [RemoteError("connection reset", code="network", retryable=True, retry_after=0)
                          for _ in range(3)]
    job = q.enqueue("civitai", remote_url=url, terms_acknowledged=True)
    with q.db.transaction() as conn:  # nobody waits for the 0 s pauses to pass
        conn.execute("DELETE FROM ingest_rate_buckets")
    q.run_pending(timeout=5)
    final = q.get(job["job_id"])
    assert final["status"] == "failed" and final["attempts"] == 3 and "retry.exhausted" in final["notes"]
    assert [e["error"] for e in final["errors"]] == ["connection reset"] * 3
    assert events(ws, "on_asset_ingest_failed")[-1]["data"]["error"] == "connection reset"
    remote.errors[url] = []
    assert q.retry(job["job_id"])["status"] == "queued"
    [done] = q.run_pending(timeout=5)
    assert done["status"] == "staged" and done["attempts"] == 4


def test_non_retryable_remote_error_fails_the_job_with_its_message(ws, q, remote):
    update_config({"ingest": {"max_remote_bytes": 10}}, ws)
    remote.bodies[URL.format(23)] = b"x" * 100
    job = q.enqueue("civitai", remote_url=URL.format(23), terms_acknowledged=True)
    [done] = q.run_pending(timeout=5)
    assert done["status"] == "failed" and done["error"] == "Remote asset exceeds size limit"
    [env] = events(ws, "on_asset_ingest_failed")
    assert env["data"]["job_id"] == job["job_id"] and env["data"]["error"] == "Remote asset exceeds size limit"


def test_cancel_during_download_stops_it_and_cleans_up(ws, q, remote):
    url = URL.format(24)
    remote.bodies[url] = os.urandom(1 << 20)
    remote.chunk = 1 << 14
    remote.gate = threading.Event()
    job = q.enqueue("civitai", remote_url=url, terms_acknowledged=True)
    result: list[dict] = []
    runner = threading.Thread(target=lambda: result.extend(q.run_pending(timeout=10)))
    runner.start()
    while q.get(job["job_id"])["status"] != "downloading":
        time.sleep(0.01)
    q.cancel(job["job_id"])
    remote.gate.set()
    runner.join(10)
    assert result and result[0]["status"] == "cancelled"
    assert q.get(job["job_id"])["status"] == "cancelled" and q.job_files(job["job_id"]) == []


def test_background_worker_picks_up_queued_jobs(ws, remote, q):
    remote.bodies[URL.format(30)] = b"background"
    q.start_worker()
    assert q.summary()["worker_running"] is True
    job = q.enqueue("civitai", remote_url=URL.format(30), terms_acknowledged=True)
    deadline = time.monotonic() + 10
    while q.get(job["job_id"])["status"] != "staged" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert q.get(job["job_id"])["status"] == "staged"
    q.stop_worker()
    assert q.summary()["worker_running"] is False


def test_job_dict_has_the_agreed_keys(ws, q):
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"a"))
    agreed = {"job_id", "provider", "status", "source_path", "remote_url", "dest_relative", "asset_type_hint",
              "pin", "terms_acknowledged", "digest", "bytes", "bytes_done", "bytes_total", "staging_path",
              "dedup_of", "existing_uid", "asset_uid", "notes", "error", "errors", "attempts", "metadata",
              "project_id", "created_at", "updated_at"}
    assert agreed <= set(job)
    json.dumps(job)  # every job is plain JSON


# ---------------------------------------------------------------------------- real remote pulls
# comfyvn.ingest.remote against the local fake Civitai / Hugging Face servers (tests/fakes).
from tests.fakes.provider_server import provider_servers_fixture  # noqa: E402,F401


@pytest.fixture
def fp(provider_servers, ws, q, monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 1000, "retry_backoff_s": 0.2}}, ws)
    return provider_servers


def test_real_civitai_pull_through_the_queue_then_dedup_before_download(ws, q, fp):
    page = fp.civitai_model_page()
    job = q.enqueue("civitai", {"tags": "heroine"}, remote_url=page, terms_acknowledged=True)
    [done] = q.run_pending(timeout=30)
    payload = fp.civitai_file(1094417)
    assert done["status"] == "staged" and done["digest"] == payload.sha256.lower()
    assert done["bytes"] == payload.size and done["filename"] == "inkwashHeroine_v20.safetensors"
    meta = done["metadata"]
    assert meta["base_model"] == "SDXL 1.0" and meta["license"] is None
    assert meta["trained_words"] == ["inkwash heroine", "ink wash"] and "heroine" in meta["tags"]
    assert meta["file"]["sha256"] == done["digest"]
    [applied] = q.apply()["applied"]
    asset = AssetRegistry(ws=ws).get_asset(applied["asset_uid"])
    assert asset["path"] == "models/loras/inkwashHeroine_v20.safetensors" and asset["type"] == "lora"  # ComfyUI layout
    assert Path(asset["abs_path"]).read_bytes() == payload.all_bytes()
    assert asset["provenance"]["provider_metadata"]["id"] and asset["provenance"]["source"] == page
    cdn_before = len(fp.requests("civitai_cdn"))
    again = q.enqueue("civitai", remote_url=page, terms_acknowledged=True)
    [dup] = q.run_pending(timeout=30)
    assert dup["job_id"] == again["job_id"] and dup["status"] == "duplicate"
    assert dup["existing_uid"] == asset["uid"] and "dedup.before_download" in dup["notes"]
    assert len(fp.requests("civitai_cdn")) == cdn_before  # not one byte downloaded twice
    assert job["job_id"] != again["job_id"]


def test_real_429_with_retry_after_requeues_then_succeeds(ws, q, fp):
    fp.inject("civitai_cdn", "/model/*", "status", status=429, headers={"Retry-After": "1"}, method="GET")
    job = q.enqueue("civitai", remote_url=fp.civitai_model_page(), terms_acknowledged=True)
    assert q.run_pending(timeout=0)[0]["status"] == "queued"
    waiting = q.get(job["job_id"])
    assert waiting["errors"][0]["retry_in"] == 1 and "429" in waiting["error"]
    assert q.summary()["rate_limits"]["civitai"]["retry_after"] > 0
    [done] = q.run_pending(timeout=30)  # the worker waits out Retry-After by itself
    assert done["status"] == "staged" and done["attempts"] == 2


def test_real_cut_connection_resumes_with_range_on_the_next_attempt(ws, q, fp):
    from comfyvn.ingest.remote import INLINE_RESUMES

    fp.inject("civitai_cdn", "/model/*", "cut", after=300_000, times=INLINE_RESUMES + 1, method="GET")
    job = q.enqueue("civitai", remote_url=fp.civitai_model_page(), terms_acknowledged=True)
    done = q.run_pending(timeout=30)
    final = q.get(job["job_id"])
    assert final["status"] == "staged" and final["digest"] == fp.civitai_file(1094417).sha256.lower()
    assert [j["status"] for j in done] == ["queued", "staged"]  # one automatic retry after the cuts
    ranges = [r.headers.get("range") for r in fp.requests("civitai_cdn")]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])
    assert ranges[-1] == f"bytes={300_000 * (INLINE_RESUMES + 1)}-"  # the kept prefix is never fetched again


@pytest.mark.parametrize("fault, message", [
    ({"action": "corrupt", "at": 1000}, "SHA-256"),
    ({"action": "oversize", "extra": 10, "chunked": True}, "exceeds size limit"),
])
def test_real_bad_bodies_fail_the_job_and_leave_no_partial_file(ws, q, fp, fault, message):
    if fault["action"] == "oversize":
        update_config({"ingest": {"max_remote_bytes": fp.civitai_file(1094417).size}}, ws)
    fp.inject("civitai_cdn", "/model/*", method="GET", **fault)
    job = q.enqueue("civitai", remote_url=fp.civitai_model_page(), terms_acknowledged=True)
    [done] = q.run_pending(timeout=30)
    assert done["status"] == "failed" and message.lower() in done["error"].lower()
    assert q.job_files(job["job_id"]) == []
    assert events(ws, "on_asset_ingest_failed")[-1]["data"]["job_id"] == job["job_id"]


def test_real_gated_huggingface_model_without_token_fails_with_advice(ws, q, fp):
    from tests.fakes import HF_GATED_REPO

    url = fp.hf_resolve_url("heroine_ckpt_v1.safetensors", repo=HF_GATED_REPO)
    job = q.enqueue("huggingface", remote_url=url, terms_acknowledged=True)
    [done] = q.run_pending(timeout=30)
    assert done["job_id"] == job["job_id"] and done["status"] == "failed"
    assert "HF_TOKEN" in done["error"]
    assert events(ws, "on_asset_ingest_failed")[-1]["data"]["error"] == done["error"]


# ---------------------------------------------------------------------------- group commit, write-behind
def test_staged_bytes_are_written_behind_and_made_durable_by_apply(ws, q, monkeypatch):
    import comfyvn.ingest.queue as queue_module
    from comfyvn.fsutil import boot_id

    synced: list[str] = []
    monkeypatch.setattr(queue_module, "fsync_file", lambda path: synced.append(str(path)))
    job = q.enqueue(source_path=write(ws.root / "a.bin", b"sprite"))
    assert q.jobs.get(job["job_id"])["staged_boot"] == boot_id() is not None
    assert synced == []  # enqueue did not wait for the disk
    [applied] = q.apply()["applied"]
    assert synced == [job["staging_path"]]  # the bytes reached the disk before the row committed
    assert Path(AssetRegistry(ws=ws).get_asset(applied["asset_uid"])["abs_path"]).read_bytes() == b"sprite"


@pytest.mark.parametrize("damaged", [False, True])
def test_after_a_machine_restart_staged_bytes_are_hashed_again(ws, q, damaged):
    data = b"staged before the power went out"
    job = q.enqueue(source_path=write(ws.root / "a.bin", data), pin=True)
    with q.db.transaction() as conn:  # as if written in an earlier boot of the machine
        conn.execute("UPDATE ingest_jobs SET staged_boot = 'an-earlier-boot' WHERE job_id = ?", (job["job_id"],))
    if damaged:  # the page cache never reached the disk
        Path(job["staging_path"]).write_bytes(b"\0" * len(data))
    result = q.apply()
    if not damaged:
        assert [j["job_id"] for j in result["applied"]] == [job["job_id"]]
        return
    [failed] = result["failed"]
    assert failed["error"].startswith("Staged bytes no longer match their digest") and failed["pin"] is False
    assert not Path(job["staging_path"]).exists() and AssetRegistry(ws=ws).count() == 0
    [env] = events(ws, "on_asset_ingest_failed")
    assert env["data"]["job_id"] == job["job_id"]
    retried = q.retry(job["job_id"])  # copies the source again
    assert retried["status"] == "staged" and Path(retried["staging_path"]).read_bytes() == data


def test_apply_is_a_group_commit_with_one_folder_fsync_per_batch(ws, q, monkeypatch):
    import comfyvn.ingest.queue as queue_module
    import comfyvn.registry.placement as placement_module

    folder_syncs: list[str] = []
    monkeypatch.setattr(placement_module, "fsync_dir", lambda path: folder_syncs.append(str(path)))
    monkeypatch.setattr(queue_module, "APPLY_BATCH", 50)
    ids = [q.enqueue(source_path=write(ws.root / "in" / f"s{i:03d}.bin", os.urandom(64)))["job_id"]
           for i in range(120)]
    begun = q.db.query_one("SELECT COUNT(*) FROM events")[0]
    result = q.apply()
    assert [j["job_id"] for j in result["applied"]] == ids
    assert len(folder_syncs) == 3  # 3 batches into one folder: 3 fsyncs, not 120
    reg = AssetRegistry(ws=ws)
    assert reg.count() == 120 and all(Path(a["sidecar"]).is_file() for a in reg.iter_assets())
    applied_events = q.db.query("SELECT data FROM events WHERE id > ? AND topic = 'on_asset_ingest_applied'",
                                (begun,))
    assert len(applied_events) == 120


def test_one_bad_job_in_a_batch_fails_alone(ws, q):
    reg = AssetRegistry(ws=ws)
    write(reg.assets_root / "misc" / "clash.txt", b"somebody else's file")
    good = [q.enqueue(source_path=write(ws.root / f"ok{i}.txt", f"fine {i}".encode()))["job_id"] for i in range(3)]
    bad = q.enqueue(source_path=write(ws.root / "clash.txt", b"mine"))["job_id"]
    gone = q.enqueue(source_path=write(ws.root / "gone.txt", b"gone"))
    Path(gone["staging_path"]).unlink()
    result = q.apply([good[0], bad, good[1], gone["job_id"], good[2], "nope"])
    assert [j["job_id"] for j in result["applied"]] == good
    assert {j["job_id"]: j["error"].split(":")[0] for j in result["failed"]} == {
        bad: "AssetCollisionError", gone["job_id"]: "Staging file missing"}
    assert result["unknown"] == ["nope"]
    assert Path(q.get(bad)["staging_path"]).read_bytes() == b"mine"  # kept for a retry
    assert reg.count() == 3 and reg.pending_recovery() == [] and q.db.query("SELECT * FROM file_intents") == []
