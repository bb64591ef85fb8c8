"""download(): streamed, capped, hashed in one pass, resumable, checked against the published hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from comfyvn.config import update_config
from comfyvn.ingest import remote
from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.remote import RemotePlan, download, plan_remote, resume_meta_path
from tests.fakes import CIVITAI_CDN_HOST, HF_CDN_HOST, FakeProviders, Payload
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def civitai_plan(ws):
    return plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)


def test_civitai_pull_follows_307_to_storage_host_byte_exact(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    part = tmp_path / "pull.part"
    seen = []
    sha, size = download(plan, part, ws=ws, max_bytes=200 * MiB, progress=lambda d, t: seen.append((d, t)))
    payload = fp.civitai_file(1094417)
    assert (sha, size) == (plan.expected_sha256, payload.size)
    assert part.read_bytes() == payload.all_bytes()
    assert not resume_meta_path(part).exists()
    assert seen[-1] == (payload.size, payload.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    cdn = fp.requests("civitai_cdn")
    assert len(cdn) == 1
    assert cdn[0].headers["host"] == CIVITAI_CDN_HOST  # pinned to 127.0.0.1, Host header kept
    assert "authorization" not in cdn[0].headers


def test_huggingface_pull_via_cas_bridge(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
    sha, size = download(plan, tmp_path / "hf.part", ws=ws, max_bytes=200 * MiB)
    assert (sha, size) == (plan.expected_sha256, 4718613)
    assert (tmp_path / "hf.part").read_bytes() == fp.hf_file("inkwash_style_xl.safetensors").all_bytes()
    assert fp.requests("hf_cdn")[0].headers["host"] == HF_CDN_HOST


def test_huggingface_small_file_without_published_sha(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = plan_remote("huggingface", FakeProviders.hf_resolve_url("README.md"), None, ws)
    sha, size = download(plan, tmp_path / "readme.part", ws=ws, max_bytes=MiB)
    data = fp.hf_file("README.md").all_bytes()
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize("server, path, provider, ref", [
    ("civitai", "/api/download/models/*", "civitai", FakeProviders.civitai_model_page()),
    ("hf", "/fixture-lab/*/resolve/*", "huggingface", FakeProviders.hf_resolve_url()),
    ("civitai_cdn", "/model/*", "civitai", FakeProviders.civitai_model_page()),  # a second hop
])
def test_redirect_to_a_host_off_the_allowlist_is_refused(provider_servers, ws, tmp_path, server, path, provider,
                                                        ref):
    fp = provider_servers
    plan = plan_remote(provider, ref, None, ws)
    fp.inject(server, path, "redirect", location="evil", method="GET")
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert err.value.code == "remote.host_not_allowed"
    assert "downloads.evil.example is not on the allow-list" in err.value.message
    assert fp.requests("evil") == []  # not one byte asked from it
    assert not (tmp_path / "x.part").exists()


def test_civitai_redirect_to_login_page_is_an_auth_error_not_a_file(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai", "/api/download/models/*", "case", name="login_required_browser")
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert err.value.code == "remote.auth_required"
    assert fp.requests("civitai", "/login*") == []


def _direct_plan(url: str, **kw) -> RemotePlan:
    return RemotePlan(provider="civitai", source_url=url, download_url=url, filename=url.rsplit("/", 1)[-1], **kw)


def test_oversize_with_content_length_is_refused_before_the_body(provider_servers, ws, tmp_path):
    fp = provider_servers
    url = fp.add_file("big.bin", Payload(seed=b"0123456789abcdef", size=3 * MiB))
    part = tmp_path / "big.part"
    with pytest.raises(RemoteError) as err:
        download(_direct_plan(url), part, ws=ws, max_bytes=MiB)
    assert err.value.code == "remote.size_limit"
    assert err.value.message.startswith("Remote asset exceeds size limit")
    assert not err.value.retryable
    assert not part.exists() and not resume_meta_path(part).exists()


def test_oversize_without_content_length_is_cut_while_streaming(provider_servers, ws, tmp_path):
    fp = provider_servers
    url = fp.add_file("big.bin", Payload(seed=b"0123456789abcdef", size=3 * MiB))
    fp.inject("civitai_cdn", "/files/big.bin", "oversize", extra=0, chunked=True)
    part = tmp_path / "big.part"
    with pytest.raises(RemoteError) as err:
        download(_direct_plan(url), part, ws=ws, max_bytes=MiB)
    assert err.value.code == "remote.size_limit"
    assert "Remote asset exceeds size limit" in err.value.message
    assert fp.requests("civitai_cdn")[0].path == "/files/big.bin"
    assert not part.exists()


def test_published_size_over_the_limit_is_refused_without_a_request(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.reset()
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=MiB)
    assert err.value.code == "remote.size_limit"
    assert fp.requests() == []


@pytest.mark.parametrize("chunked", [False, True])
def test_more_bytes_than_the_provider_published_is_refused(provider_servers, ws, tmp_path, chunked):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "oversize", extra=512 * 1024, chunked=chunked)
    part = tmp_path / "x.part"
    with pytest.raises(RemoteError) as err:
        download(plan, part, ws=ws, max_bytes=200 * MiB)
    assert err.value.code == "remote.hash_mismatch"
    assert not part.exists()


def test_wrong_bytes_fail_the_hash_check_and_the_part_file_goes(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "corrupt", at=1_234_567)
    part = tmp_path / "x.part"
    with pytest.raises(RemoteError) as err:
        download(plan, part, ws=ws, max_bytes=200 * MiB)
    assert err.value.code == "remote.hash_mismatch"
    assert "SHA-256" in err.value.message and "5aa7e63d24217f0d" in err.value.message
    assert not err.value.retryable
    assert not part.exists() and not resume_meta_path(part).exists()


@pytest.mark.parametrize("fault, retry_after, words", [
    ({"action": "case", "name": "rate_limited_origin"}, remote.DEFAULT_RETRY_AFTER_S, "no Retry-After"),
    ({"action": "status", "status": 429, "headers": {"Retry-After": "7"}, "body": "slow down"}, 7.0,
     "as the server asked"),
    ({"action": "case", "name": "rate_limited_edge_with_retry_after"}, 30.0, "as the server asked"),
])
def test_civitai_429_is_retryable_with_retry_after(provider_servers, ws, tmp_path, fault, retry_after, words):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai", "/api/download/models/*", **fault)
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    e = err.value
    assert (e.code, e.retryable, e.retry_after, e.status) == ("remote.rate_limited", True, retry_after, 429)
    assert words in e.message
    # the next attempt goes through
    sha, _ = download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert sha == plan.expected_sha256


def test_huggingface_429_uses_the_ratelimit_header(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
    fp.inject("hf", "/fixture-lab/*/resolve/*", "case", name="rate_limited", method="GET")
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable, err.value.retry_after) == ("remote.rate_limited", True, 55.0)


def test_server_error_is_retryable(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai", "/api/download/models/*", "case", name="server_error")
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable) == ("remote.server_error", True)
    assert "Error getting file" in err.value.message


def test_cut_connection_is_resumed_inline_with_range_and_if_range(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "cut", after=1_000_000)
    part = tmp_path / "x.part"
    sha, size = download(plan, part, ws=ws, max_bytes=200 * MiB)
    assert (sha, size) == (plan.expected_sha256, 2731337)
    assert part.read_bytes() == fp.civitai_file(1094417).all_bytes()
    first, second = fp.requests("civitai_cdn")
    assert "range" not in first.headers
    assert second.headers["range"] == "bytes=1000000-"
    assert second.headers["if-range"] == f'"{fp.civitai_file(1094417).sha256[:32]}-1"'
    # each attempt asked civitai.com for a fresh signed link
    assert len(fp.requests("civitai", "/api/download/models/*")) == 2


def test_cut_connection_then_restart_resumes_from_the_part_file(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)  # as if the process died at the cut
    plan = plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
    fp.inject("hf_cdn", "/xet-bridge-us/*", "cut", after=3_000_000)
    part = tmp_path / "x.part"
    with pytest.raises(RemoteError) as err:
        download(plan, part, ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable) == ("remote.connection", True)
    assert part.stat().st_size == 3_000_000
    meta = json.loads(resume_meta_path(part).read_text())
    assert meta["download_url"] == plan.download_url and meta["etag"]

    sha, size = download(plan, part, ws=ws, max_bytes=200 * MiB)  # "after the restart"
    assert (sha, size) == (plan.expected_sha256, 4718613)
    assert part.read_bytes() == fp.hf_file("inkwash_style_xl.safetensors").all_bytes()
    last = fp.requests("hf_cdn")[-1]
    assert last.headers["range"] == "bytes=3000000-" and last.headers["if-range"] == meta["etag"]
    assert not resume_meta_path(part).exists()


def test_file_changed_since_the_cut_starts_over(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "cut", after=700_000)
    part = tmp_path / "x.part"
    with pytest.raises(RemoteError):
        download(plan, part, ws=ws, max_bytes=200 * MiB)
    fp.inject("civitai_cdn", "/model/*", "change_etag")  # If-Range no longer matches -> 200, whole file
    sha, size = download(plan, part, ws=ws, max_bytes=200 * MiB)
    assert (sha, size) == (plan.expected_sha256, 2731337)
    assert part.read_bytes() == fp.civitai_file(1094417).all_bytes()
    assert fp.requests("civitai_cdn")[-1].headers["range"] == "bytes=700000-"


def test_server_ignoring_range_starts_over(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    url = fp.add_file("sheet.bin", Payload(seed=b"sprite sheet\n", size=900_000))
    payload = fp.files["sheet.bin"][0]
    plan = _direct_plan(url, expected_sha256=payload.sha256)
    fp.inject("civitai_cdn", "/files/*", "cut", after=400_000)
    part = tmp_path / "x.part"
    with pytest.raises(RemoteError):
        download(plan, part, ws=ws, max_bytes=MiB)
    fp.inject("civitai_cdn", "/files/*", "ignore_range")
    assert download(plan, part, ws=ws, max_bytes=MiB) == (payload.sha256, 900_000)
    assert part.read_bytes() == payload.all_bytes()


def test_part_file_of_another_download_is_not_reused(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    part = tmp_path / "x.part"
    part.write_bytes(b"leftover bytes of something else")
    assert download(plan, part, ws=ws, max_bytes=200 * MiB)[0] == plan.expected_sha256
    assert "range" not in fp.requests("civitai_cdn")[0].headers


def test_complete_part_file_is_verified_without_downloading(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    part = tmp_path / "x.part"
    part.write_bytes(fp.civitai_file(1094417).all_bytes())  # finished before a crash, never moved
    fp.reset()
    assert download(plan, part, ws=ws, max_bytes=200 * MiB) == (plan.expected_sha256, 2731337)
    assert fp.requests() == []


def test_cancel_stops_and_keeps_the_part_for_a_resume(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setattr(remote, "PROGRESS_INTERVAL_S", 0.0)
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "slow", chunk=64 * 1024, delay=0.01)
    part = tmp_path / "x.part"
    done = []

    def cancelled() -> bool:
        return bool(done) and done[-1] >= 300_000

    with pytest.raises(RemoteError) as err:
        download(plan, part, ws=ws, max_bytes=200 * MiB, progress=lambda d, t: done.append(d), cancelled=cancelled)
    assert (err.value.code, err.value.retryable) == ("remote.cancelled", False)
    kept = part.stat().st_size
    assert 300_000 <= kept < 2731337 and resume_meta_path(part).exists()
    assert download(plan, part, ws=ws, max_bytes=200 * MiB)[0] == plan.expected_sha256
    assert fp.requests("civitai_cdn")[-1].headers["range"] == f"bytes={kept}-"


def test_read_timeout_is_retryable(provider_servers, ws, tmp_path, monkeypatch):
    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    update_config({"ingest": {"remote_timeout_s": 1.0}}, ws)
    plan = civitai_plan(ws)
    fp.inject("civitai_cdn", "/model/*", "slow", chunk=256 * 1024, delay=3.0)  # one chunk, then silence
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable) == ("remote.timeout", True)
    assert (tmp_path / "x.part").stat().st_size == 256 * 1024  # the prefix is kept for the resume


def test_expired_storage_link_is_retryable(provider_servers, ws, tmp_path):
    fp = provider_servers
    plan = civitai_plan(ws)
    fp.link_ttl = -1
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)
    assert (err.value.code, err.value.retryable) == ("remote.link_expired", True)
    fp.link_ttl = 3600
    assert download(plan, tmp_path / "x.part", ws=ws, max_bytes=200 * MiB)[0] == plan.expected_sha256


# ---------------------------------------------------------------------------- the body straight from the socket
@pytest.mark.parametrize("published", [False, True])
def test_a_resumed_range_longer_than_announced_is_refused_before_its_body(provider_servers, ws, tmp_path,
                                                                         monkeypatch, published):
    """A 206 whose Content-Length runs past the size cap (or the published size) is refused before
    a byte of it is read: the body is read by its Content-Length, so that length is checked first."""
    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    url = fp.add_file("sheet.bin", Payload(seed=b"sprite sheet\n", size=900_000))
    payload = fp.files["sheet.bin"][0]
    plan = _direct_plan(url, **({"expected_size": 900_000} if published else {}))
    cap = 4 * MiB if published else 900_000  # the published size is the tighter bound, or the cap is
    part = tmp_path / "x.part"
    fp.inject("civitai_cdn", "/files/*", "cut", after=400_000)
    with pytest.raises(RemoteError):
        download(plan, part, ws=ws, max_bytes=cap)
    fp.inject("civitai_cdn", "/files/*", "oversize", extra=2 * MiB)  # the resume's 206 carries 2 MiB more
    with pytest.raises(RemoteError) as err:
        download(plan, part, ws=ws, max_bytes=cap)
    assert err.value.code == ("remote.hash_mismatch" if published else "remote.size_limit")
    assert fp.requests("civitai_cdn")[-1].headers["range"] == "bytes=400000-"
    assert not part.exists() and not resume_meta_path(part).exists()
    assert download(plan, part, ws=ws, max_bytes=cap)[1] == 900_000  # a sane server afterwards: whole file
    assert part.read_bytes() == payload.all_bytes()


def test_a_content_length_body_is_read_in_large_reads_not_through_httpx(provider_servers, ws, tmp_path, monkeypatch):
    """httpx reads 64 KiB per call through h11 (48 calls for 3 MiB); the downloader takes the body
    from the socket itself, so httpcore only reads the headers and what came with them."""
    import httpcore._sync.http11 as http11

    fp = provider_servers
    reads = []
    real = http11.HTTP11Connection._receive_event

    def counted(self, *args, **kwargs):
        reads.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(http11.HTTP11Connection, "_receive_event", counted)
    url = fp.add_file("big.bin", Payload(seed=b"0123456789abcdef!", size=3 * MiB + 4097))
    payload = fp.files["big.bin"][0]
    part = tmp_path / "big.part"
    assert download(_direct_plan(url, expected_sha256=payload.sha256), part, ws=ws, max_bytes=4 * MiB) == (
        payload.sha256, 3 * MiB + 4097)
    assert part.read_bytes() == payload.all_bytes()
    assert len(reads) <= 4, len(reads)


def test_https_pull_read_from_the_tls_socket_resumes_after_a_cut(ws, tmp_path):
    """The direct read works on the TLS socket too (decrypted records), across groups and a resume."""
    with FakeProviders(tls=True) as fp:
        fp.configure(ws)
        url = fp.add_file("big.bin", Payload(seed=b"0123456789abcdef!", size=3 * MiB + 4097))
        payload = fp.files["big.bin"][0]
        assert url.startswith("https://")
        fp.inject("civitai_cdn", "/files/*", "cut", after=1_500_000)
        part = tmp_path / "big.part"
        plan = _direct_plan(url, expected_sha256=payload.sha256)
        assert download(plan, part, ws=ws, max_bytes=4 * MiB) == (payload.sha256, 3 * MiB + 4097)
        assert part.read_bytes() == payload.all_bytes()
        assert fp.requests("civitai_cdn")[-1].headers["range"] == "bytes=1500000-"


def test_a_full_disk_fails_the_pull_with_the_os_error_and_no_thread_left(provider_servers, ws, tmp_path):
    import errno
    import resource
    import signal
    import threading

    fp = provider_servers
    url = fp.add_file("big.bin", Payload(seed=b"0123456789abcdef!", size=3 * MiB))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (MiB + 12345, limits[1]))  # the "disk" fills mid-file
        with pytest.raises(OSError) as err:
            download(_direct_plan(url), tmp_path / "big.part", ws=ws, max_bytes=4 * MiB)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.errno == errno.EFBIG
    assert not [t for t in threading.enumerate() if t.name == "comfyvn-sha256"]


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_false_leaves_a_finished_file_written_behind_but_a_kept_prefix_durable(provider_servers, ws, tmp_path,
                                                                                   monkeypatch, fsync):
    import os

    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    url = fp.add_file("sheet.bin", Payload(seed=b"sprite sheet\n", size=900_000))
    payload = fp.files["sheet.bin"][0]
    plan = _direct_plan(url, expected_sha256=payload.sha256)
    part = tmp_path / "x.part"
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(remote.os, "fsync", spy)
    fp.inject("civitai_cdn", "/files/*", "cut", after=400_000)
    with pytest.raises(RemoteError):
        download(plan, part, ws=ws, max_bytes=MiB, fsync=fsync)
    assert part.stat().st_ino in synced  # the prefix kept for the resume is on disk either way
    synced.clear()
    assert download(plan, part, ws=ws, max_bytes=MiB, fsync=fsync) == (payload.sha256, 900_000)
    assert (part.stat().st_ino in synced) is fsync


def test_resume_validators_reach_the_disk_only_when_a_prefix_is_kept(provider_servers, ws, tmp_path, monkeypatch):
    """A pull that finishes never needed its validators on disk (they are deleted at the end): no
    fsync of them per pull.  A prefix kept for a resume is durable with its validators and folder."""
    import os

    fp = provider_servers
    monkeypatch.setattr(remote, "INLINE_RESUMES", 0)
    url = fp.add_file("sheet.bin", Payload(seed=b"sprite sheet\n", size=900_000))
    payload = fp.files["sheet.bin"][0]
    plan = _direct_plan(url, expected_sha256=payload.sha256)
    part = tmp_path / "x.part"
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(remote.os, "fsync", spy)
    assert download(plan, part, ws=ws, max_bytes=MiB) == (payload.sha256, 900_000)
    assert synced == [str(part)]  # the finished file only: its validators were written behind
    part.unlink()
    synced.clear()
    fp.inject("civitai_cdn", "/files/*", "cut", after=400_000)
    with pytest.raises(RemoteError):
        download(plan, part, ws=ws, max_bytes=MiB)
    meta = remote.resume_meta_path(part)
    assert synced == [str(part), str(meta), str(tmp_path)]
    assert json.loads(meta.read_text())["download_url"] == plan.download_url
    assert download(plan, part, ws=ws, max_bytes=MiB) == (payload.sha256, 900_000)  # resumed from the prefix
