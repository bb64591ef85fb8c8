"""netguard: https only, allow-listed hosts, public addresses, connections pinned to the checked address."""

from __future__ import annotations

import socket

import pytest

from comfyvn.config import update_config
from comfyvn.ingest.errors import RemoteError
from comfyvn.ingest.netguard import allowed_host_rules, check_url, host_allowed
from comfyvn.ingest.remote import RemotePlan, download, plan_remote
from tests.fakes import FakeProviders, Payload
from tests.fakes.provider_server import provider_servers_fixture  # noqa: F401


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch):
    for name in ("CIVITAI_API_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_private_and_loopback_addresses_are_refused_unless_allowed(provider_servers, ws):
    fp = provider_servers
    update_config({"ingest": {"allow_private_addresses": False}}, ws)
    with pytest.raises(RemoteError) as err:
        plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
    assert err.value.code == "remote.private_address"
    assert "127.0.0.1" in err.value.message and "ingest.allow_private_addresses" in err.value.message
    assert fp.requests() == []  # refused before connecting
    update_config({"ingest": {"allow_private_addresses": True}}, ws)
    assert plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws).expected_size == 2731337


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.8", "172.16.5.4", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fc00::5", "::ffff:127.0.0.1",
                                     "224.0.0.1"])
def test_non_public_addresses(ws, address):
    update_config({"ingest": {"host_overrides": {"civitai.com": address}}}, ws)
    with pytest.raises(RemoteError) as err:
        check_url("https://civitai.com/api/v1/models/1", provider="civitai", ws=ws)
    assert err.value.code == "remote.private_address"


def test_public_address_is_pinned_with_host_header_and_sni(ws):
    update_config({"ingest": {"host_overrides": {"civitai.com": "104.18.20.1"}}}, ws)
    t = check_url("https://civitai.com/api/download/models/1?type=Model", provider="civitai", ws=ws)
    assert t.connect_url == "https://104.18.20.1/api/download/models/1?type=Model"
    assert (t.host_header, t.address, t.port) == ("civitai.com", "104.18.20.1", 443)
    assert t.request_extensions() == {"sni_hostname": "civitai.com"}  # TLS checks the name, not the IP


def test_plain_http_is_refused_unless_allowed(provider_servers, ws, tmp_path):
    fp = provider_servers
    update_config({"ingest": {"allow_insecure_http": False}}, ws)
    with pytest.raises(RemoteError) as err:
        plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
    assert err.value.code == "remote.insecure_scheme"
    assert "https only" in err.value.message
    url = fp.add_file("a.bin", b"abc")
    plan = RemotePlan(provider="civitai", source_url=url, download_url=url, filename="a.bin")
    with pytest.raises(RemoteError) as err:
        download(plan, tmp_path / "a.part", ws=ws, max_bytes=100)
    assert err.value.code == "remote.insecure_scheme"
    assert fp.requests() == []


@pytest.mark.parametrize("host, port, rules, ok", [
    ("civitai.com", 443, ["civitai.com"], True),
    ("evil-civitai.com", 443, ["civitai.com"], False),
    ("civitai.com.evil.example", 443, ["civitai.com"], False),
    ("civitai-delivery-worker-prod.abc123.r2.cloudflarestorage.com", 443,
     ["civitai-delivery-worker-prod.*.r2.cloudflarestorage.com"], True),
    # ``*`` stays inside one label
    ("civitai-delivery-worker-prod.a.b.r2.cloudflarestorage.com", 443,
     ["civitai-delivery-worker-prod.*.r2.cloudflarestorage.com"], False),
    ("127.0.0.1", 8001, ["127.0.0.1:8001"], True),
    ("127.0.0.1", 8002, ["127.0.0.1:8001"], False),
    ("127.0.0.1", 8002, ["127.0.0.1"], True),
])
def test_allowlist_rules(host, port, rules, ok):
    assert host_allowed(host, port, rules) is ok


def test_allowlist_comes_from_mappers_plus_config(ws):
    from comfyvn.ingest.mappers import _REMOTE_ALLOWLIST

    update_config({"ingest": {"providers": {"civitai": {"base_url": "http://127.0.0.1:9999",
                                                        "allowed_hosts": ["mirror.studio.example"]}},
                              "extra_allowed_hosts": ["assets.studio.example:8443"]}}, ws)
    rules = allowed_host_rules("civitai", ws)
    assert rules[: len(_REMOTE_ALLOWLIST["civitai"])] == list(_REMOTE_ALLOWLIST["civitai"])
    assert {"127.0.0.1:9999", "mirror.studio.example", "assets.studio.example:8443"} <= set(rules)
    assert not host_allowed("127.0.0.1", 9998, rules)


def test_credentials_in_urls_are_refused(ws):
    with pytest.raises(RemoteError) as err:
        check_url("https://user:pw@civitai.com/x", provider="civitai", ws=ws)
    assert err.value.code == "remote.bad_url" and "pw" not in err.value.message


def test_dns_is_resolved_once_and_the_connection_pinned(provider_servers, ws, tmp_path, monkeypatch):
    """A DNS-rebinding host: the checked answer is used; a later lookup would lead elsewhere."""
    fp = provider_servers
    port = fp.port("civitai_cdn")
    name = "rebind.example.test"
    update_config({"ingest": {"extra_allowed_hosts": [f"{name}:{port}"]}}, ws)
    real = socket.getaddrinfo
    asked: list[str] = []

    def fake_getaddrinfo(host, *args, **kwargs):
        if host == name:
            asked.append(host)
            if len(asked) > 2:  # a rebinding answer: somewhere else (a closed loopback address here)
                return real("127.0.0.2", *args, **kwargs)
            return real("127.0.0.1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    payload = Payload(seed=b"pinned\n", size=50_000)
    fp.add_file("pin.bin", payload)
    url = f"http://{name}:{port}/files/pin.bin"
    plan = plan_remote("generic", url, {"sha256": payload.sha256}, ws)
    assert download(plan, tmp_path / "p.part", ws=ws, max_bytes=10**6) == (payload.sha256, 50_000)
    assert fp.requests("civitai_cdn")[-1].headers["host"] == f"{name}:{port}"
    # one lookup by plan_remote's check, one by download's check: httpx itself never resolved the name
    assert asked == [name, name]


def test_https_end_to_end_with_pinned_addresses_and_verified_certificates(ws, tmp_path):
    """Production mode: https only, real host names (pinned to 127.0.0.1), certificates checked."""
    with FakeProviders(tls=True) as fp:
        fp.configure(ws)
        plan = plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
        assert plan.download_url == "https://civitai.com/api/download/models/1184630"
        assert download(plan, tmp_path / "c.part", ws=ws, max_bytes=10**8) == (plan.expected_sha256, 2731337)
        hf = plan_remote("huggingface", FakeProviders.hf_resolve_url(), None, ws)
        assert download(hf, tmp_path / "h.part", ws=ws, max_bytes=10**8)[0] == hf.expected_sha256
        assert fp.requests("civitai")[0].headers["host"] == "civitai.com"

        update_config({"ingest": {"ca_bundle": None}}, ws)  # the fake's CA is not trusted any more
        with pytest.raises(RemoteError) as err:
            plan_remote("civitai", FakeProviders.civitai_model_page(), None, ws)
        assert err.value.code == "remote.tls" and "civitai.com" in err.value.message


@pytest.mark.parametrize("headers, ratelimit, expected", [
    ({"Retry-After": "120"}, True, 120.0),
    ({"Retry-After": "1.5"}, True, 1.5),
    ({"RateLimit": '"resolvers";r=0;t=55'}, True, 55.0),
    ({"RateLimit": '"resolvers";r=0;t=55'}, False, None),  # a 5xx: the window reset is no back-off hint
    ({}, True, None),
])
def test_retry_after_parsing(headers, ratelimit, expected):
    import httpx

    from comfyvn.ingest.providers.base import parse_retry_after

    assert parse_retry_after(httpx.Headers(headers), ratelimit=ratelimit) == expected


def test_retry_after_as_http_date():
    import email.utils
    import time

    import httpx

    from comfyvn.ingest.providers.base import parse_retry_after

    when = email.utils.formatdate(time.time() + 90, usegmt=True)
    assert 80 <= parse_retry_after(httpx.Headers({"Retry-After": when})) <= 91


def test_unreadable_ca_bundle_is_a_clear_error(ws, tmp_path):
    update_config({"ingest": {"ca_bundle": str(tmp_path / "missing.pem")}}, ws)
    with pytest.raises(RemoteError) as err:
        plan_remote("civitai", "civitai:1184630", None, ws)
    assert err.value.code == "remote.tls" and "missing.pem" in err.value.message
