"""Modder hooks and webhooks under attack: one address rule for every outgoing connection,
secrets at rest, forged envelope fields, malformed cursors and the webhook receiver's counts."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest

from comfyvn import netpolicy
from comfyvn.config import ConfigError, update_config
from comfyvn.hooks.webhooks import TargetRefused, WebhookManager
from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.netguard import check_url
from comfyvn.store import open_store

from .fuzzkit import count

# IPv6 spellings of loopback / private / link-local IPv4 addresses
EMBEDDED_PRIVATE = ["::7f00:1", "::127.0.0.1", "::a00:1", "::ffff:0:7f00:1", "::ffff:0:c0a8:1",
                    "64:ff9b::7f00:1", "64:ff9b:1::a9fe:a9fe", "2002:7f00:1::1", "2002:a9fe:a9fe::",
                    "2001:0:4136:e378:8000:63bf:80ff:fffe"]
PUBLIC = ["93.184.216.34", "2606:4700:4700::1111", "2002:5db8:d822::1", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_ipv6_embeddings_of_private_ipv4_are_not_public(address):
    count("attacks.ssrf")
    assert not netpolicy.is_public_address(address)
    assert any(not v4.is_global for v4 in netpolicy.embedded_ipv4(ipaddress.IPv6Address(address))) or \
        not ipaddress.ip_address(address).is_global


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_stay_public(address):
    assert netpolicy.is_public_address(address)


@pytest.mark.parametrize("address", ["::7f00:1", "::ffff:0:a00:1", "64:ff9b::c0a8:101"])
def test_ipv4_compatible_forms_are_refused_as_webhook_target_and_remote_host(ws, address):
    count("attacks.ssrf")
    with pytest.raises(TargetRefused, match="private"):
        WebhookManager(open_store(ws)).register("*", f"http://[{address}]:8080/hook")
    update_config({"ingest": {"host_overrides": {"civitai.com": address}}}, ws)
    with pytest.raises(RemoteError) as info:
        check_url("https://civitai.com/api/download/models/1", provider="civitai", ws=ws)
    assert info.value.code == "remote.private_address"


@pytest.mark.parametrize("port", ["0", "65536", "99999", "x"])
def test_webhook_urls_and_remote_urls_share_one_port_rule(ws, port):
    from comfyvn.ingest.providers.base import check_reference_url

    count("attacks.ssrf")
    url = f"http://example.com:{port}/hook"
    with pytest.raises(ValueError, match="invalid port"):
        WebhookManager(open_store(ws)).register("*", url)
    with pytest.raises(ValueError, match="invalid port"):
        netpolicy.url_port(urlsplit(url))
    with pytest.raises(RemoteError, match="invalid port"):
        check_reference_url(url)
    assert netpolicy.url_port(urlsplit("http://example.com:1/")) == 1
    assert netpolicy.url_port(urlsplit("https://example.com/")) is None


def test_one_setting_allows_private_targets_everywhere_and_wins_over_the_old_keys(ws):
    db = open_store(ws)
    update_config({"ingest": {"host_overrides": {"civitai.com": "127.0.0.1"}}}, ws)
    url = "https://civitai.com/api/download/models/1"
    # the old per-area keys are still read while the new one is not set
    update_config({"ingest": {"allow_private_addresses": True}, "hooks": {"allow_private_webhook_targets": True}}, ws)
    assert check_url(url, provider="civitai", ws=ws).address == "127.0.0.1"
    assert WebhookManager(db).register("*", "http://127.0.0.1:9/a")["url"] == "http://127.0.0.1:9/a"
    # an explicit network.allow_private_addresses decides for both areas
    update_config({"network": {"allow_private_addresses": False}}, ws)
    with pytest.raises(RemoteError, match="network.allow_private_addresses"):
        check_url(url, provider="civitai", ws=ws)
    with pytest.raises(TargetRefused, match="network.allow_private_addresses"):
        WebhookManager(db).register("*", "http://127.0.0.1:9/b")
    update_config({"network": {"allow_private_addresses": True}, "ingest": {"allow_private_addresses": False},
                   "hooks": {"allow_private_webhook_targets": False}}, ws)
    assert check_url(url, provider="civitai", ws=ws).address == "127.0.0.1"
    assert WebhookManager(db).register("*", "http://127.0.0.1:9/c")
    update_config({"network": {"allow_private_addresses": "yes"}}, ws)
    with pytest.raises(ConfigError, match="true or false"):
        netpolicy.allow_private("webhook", ws)


# ---------------------------------------------------------------------------- the harness's webhook receiver
def _post_raw(url: str, headers: dict[str, str], body: bytes, *, declared: int) -> None:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {declared}",
            *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the sender dies here: no more bytes will come
        sock.recv(1024)


def test_receiver_counts_a_cut_body_as_cut_and_a_tampered_body_as_a_bad_signature():
    """A delivery whose body stops before its Content-Length (the server was SIGKILLed mid-send)
    is a cut connection, not a forgery; a complete body that does not verify is."""
    import time

    from relkit import WebhookReceiver, classify_delivery

    from comfyvn.hooks.webhooks import sign

    receiver = WebhookReceiver()
    try:
        body = b'{"id":7,"event":"on_modder_test","ts":1,"data":{"message":"x"}}'
        ts = str(int(time.time()))
        headers = {"X-Comfyvn-Timestamp": ts, "X-Comfyvn-Signature": sign(receiver.secret, ts, body),
                   "X-Comfyvn-Delivery": "d1", "X-Comfyvn-Event": "on_modder_test", "X-Comfyvn-Attempt": "1"}
        _post_raw(receiver.url, headers, body, declared=len(body))
        _post_raw(receiver.url, headers, body[:20], declared=len(body))
        _post_raw(receiver.url, headers, body.replace(b'"x"', b'"y"'), declared=len(body))
        deadline = time.monotonic() + 10
        while len(receiver.snapshot()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = receiver.stats({7})
        assert (stats["deliveries"], stats["delivered"], stats["cut_deliveries"], stats["bad_signatures"]) == \
            (3, 1, 1, 1), stats
        assert classify_delivery(receiver.secret, headers, body, len(body)) == "ok"
        assert classify_delivery(receiver.secret, headers, body[:-1], len(body)) == "cut"
        assert classify_delivery(receiver.secret, headers, body[:-1] + b" ", len(body)) == "bad_signature"
    finally:
        receiver.close()
