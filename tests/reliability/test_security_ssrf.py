"""SSRF and oversize downloads: remote pulls and webhooks must not be turned against the local network.

Remote pulls: private/loopback literals, allow-listed names that resolve to loopback or private
addresses (the resolver is monkeypatched in-process; nothing touches /etc/hosts), redirects to
hosts off the allow-list or to loopback, and downloads larger than the cap (with and without
Content-Length).  Webhooks: private targets at registration, and a name that resolves to a
public address at registration but to loopback at delivery (DNS rebinding).
"""

from __future__ import annotations

import socket

import pytest

from comfyvn.config import update_config
from comfyvn.hooks import emit, get_hook_bus
from comfyvn.hooks.webhooks import WebhookDispatcher, WebhookManager
from comfyvn.ingest.errors import IngestError, RemoteError
from comfyvn.ingest.netguard import check_url
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.store import open_store
from tests.fakes.provider_server import EVIL_HOST, provider_servers_fixture  # noqa: F401

from .fuzzkit import count

PRIVATE = ["127.0.0.1", "127.8.9.10", "10.0.0.5", "172.16.3.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
           "0.0.0.0", "::1", "::ffff:127.0.0.1", "fc00::1", "fe80::1", "224.0.0.1",
           # IPv6 spellings of private IPv4: compatible, translated, NAT64, 6to4
           "::7f00:1", "::127.0.0.1", "::ffff:0:7f00:1", "64:ff9b::a00:5", "2002:c0a8:101::1"]


def _resolver(mapping: dict[str, str]):
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if isinstance(host, str) and host.lower().rstrip(".") in mapping:
            addr = mapping[host.lower().rstrip(".")]
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sockaddr = (addr, port or 0, 0, 0) if family == socket.AF_INET6 else (addr, port or 0)
            return [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
        return real(host, port, *args, **kwargs)
    return fake


@pytest.mark.parametrize("address", PRIVATE)
def test_allowlisted_name_resolving_to_a_private_address_is_refused(ws, monkeypatch, address):
    """``civitai.com`` answering with a loopback/private/link-local address (a poisoned or rebinding DNS)."""
    count("attacks.ssrf")
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"civitai.com": address, "huggingface.co": address}))
    for url, provider in (("https://civitai.com/api/download/models/1", "civitai"),
                          ("https://huggingface.co/org/repo/resolve/main/x.bin", "huggingface")):
        with pytest.raises(RemoteError) as info:
            check_url(url, provider=provider, ws=ws)
        assert info.value.code == "remote.private_address", info.value.code
        assert address.split("%")[0] in str(info.value) or "private" in str(info.value)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.bin", "https://127.0.0.1:8888/api/contents", "https://[::1]/x", "https://2130706433/x",
    "https://0x7f000001/x", "https://0177.0.0.1/x", "https://169.254.169.254/latest/meta-data/",
    "https://localhost/x", "https://civitai.com.evil.example/x", "https://user:pw@civitai.com/x",
    "file:///etc/passwd", "gopher://civitai.com/x", "ftp://huggingface.co/x",
])
def test_remote_urls_off_the_allowlist_or_private_are_refused_at_enqueue(ws, url):
    count("attacks.ssrf")
    queue = AssetIngestQueue(ws)
    with pytest.raises((IngestError, ValueError)) as info:
        queue.enqueue("generic" if "civitai" not in url else "civitai", remote_url=url, terms_acknowledged=True)
    assert str(info.value)
    assert queue.list_jobs() == [] or all(j["status"] == "failed" for j in queue.list_jobs())


@pytest.fixture
def pulls(ws, provider_servers):
    update_config({"ingest": {"rate_limit_rps": 1000, "rate_limit_burst": 100}}, ws)
    queue = AssetIngestQueue(ws)
    yield queue, provider_servers
    queue.stop_worker()


def _pull(queue, url: str, provider: str = "civitai") -> dict:
    job = queue.enqueue(provider, remote_url=url, terms_acknowledged=True)
    queue.run_pending(timeout=30)
    return queue.get(job["job_id"])


@pytest.mark.parametrize("target", ["evil", "loopback-literal", "metadata-ip"])
def test_redirect_off_the_allowlist_is_refused_on_that_hop(pulls, target):
    count("attacks.ssrf")
    queue, fp = pulls
    location = {"evil": "evil", "loopback-literal": f"http://127.0.0.1:{fp.port('evil')}/model/x.safetensors",
                "metadata-ip": "http://169.254.169.254/latest/meta-data/"}[target]
    fp.inject("civitai", "/api/download/models/*", "redirect", location=location, times=None)
    job = _pull(queue, fp.civitai_model_page())
    assert job["status"] == "failed", job
    assert "allow-list" in job["error"] or "allowlist" in job["error"], job["error"]
    assert fp.requests("evil") == [], "the refused host was contacted"
    assert not list(queue.staging_dir.rglob("*.part")), "a partial download was left behind"


def test_allowlisted_cdn_name_mapped_to_loopback_is_refused_without_private_addresses(pulls, ws):
    """The fake CDN names resolve to 127.0.0.1 (ingest.host_overrides): with private addresses
    refused, the pull fails before any connection is made."""
    count("attacks.ssrf")
    queue, fp = pulls
    update_config({"ingest": {"allow_private_addresses": False}}, ws)
    job = _pull(queue, fp.civitai_model_page())
    assert job["status"] == "failed", job
    assert "private" in job["error"] or "loopback" in job["error"], job["error"]
    assert fp.requests("civitai_cdn") == [] and fp.requests("civitai") == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-content-length"])
def test_oversize_download_is_cut_and_leaves_no_partial_file(pulls, ws, chunked):
    count("attacks.oversize")
    queue, fp = pulls
    update_config({"ingest": {"max_remote_bytes": 1_000_000}}, ws)  # the fixture file is 2.7 MB
    job = _pull(queue, fp.civitai_model_page())
    assert job["status"] == "failed" and "exceeds size limit" in job["error"], job
    fp.reset()
    update_config({"ingest": {"max_remote_bytes": 3_000_000}}, ws)
    fp.inject("civitai_cdn", "/model/*", "oversize", extra=5_000_000, chunked=chunked, times=None)
    job = queue.retry(job["job_id"])
    queue.run_pending(timeout=60)
    job = queue.get(job["job_id"])
    assert job["status"] == "failed", job
    assert "size" in job["error"] or "hash" in job["error"] or "published" in job["error"], job["error"]
    assert not [p for p in queue.staging_dir.rglob("*") if p.is_file()], "a partial download was left behind"


# ---------------------------------------------------------------------------- webhooks
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://localhost/hook", "http://sub.localhost/hook", "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/hook", "http://192.168.0.10/hook",
    "http://2130706433/hook", "http://0x7f000001/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://[::7f00:1]/hook", "http://[::127.0.0.1]:9/hook", "http://[::ffff:0:7f00:1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook", "http://[2002:a00:1::1]/hook", "http://rebind6.example.test/hook",
    "http://user:pw@example.org/hook", "ftp://example.org/hook", "file:///etc/passwd", "javascript:alert(1)",
    "http://rebind.example.test/hook",
])
def test_webhook_targets_on_the_local_network_are_refused(ws, monkeypatch, url):
    count("attacks.ssrf")
    monkeypatch.setattr(socket, "getaddrinfo", _resolver({"rebind.example.test": "127.0.0.1",
                                                                 "rebind6.example.test": "::7f00:1"}))
    with pytest.raises(ValueError):
        WebhookManager(open_store(ws)).register("*", url)


def test_webhook_dns_rebinding_at_delivery_is_refused(ws, monkeypatch):
    """Public at registration, loopback at delivery: the dispatcher re-checks and refuses to post."""
    count("attacks.ssrf")
    from relkit import WebhookReceiver

    receiver = WebhookReceiver()
    try:
        port = receiver.httpd.server_address[1]
        mapping = {"hooks.example.test": "93.184.216.34"}
        monkeypatch.setattr(socket, "getaddrinfo", _resolver(mapping))
        db = open_store(ws)
        hook = WebhookManager(db).register("on_modder_test", f"http://hooks.example.test:{port}/hook", "s3cret")
        mapping["hooks.example.test"] = "127.0.0.1"  # the name now points at the local machine
        with db.transaction() as conn:
            emit(conn, "on_modder_test", {"message": "rebinding"})
        get_hook_bus(db).poke()
        dispatcher = WebhookDispatcher(db)
        assert dispatcher.run_once() == 1
        [attempt] = WebhookManager(db).deliveries(hook["id"])
        assert not attempt["ok"] and "private" in attempt["error"], attempt
        assert receiver.snapshot() == [], "the dispatcher posted to a loopback address"
    finally:
        receiver.close()
