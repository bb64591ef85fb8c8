"""Address policy for remote pulls: which URLs the downloader may touch, and where it connects.

Every URL a pull touches (the user's URL, each provider API call, every redirect hop) goes
through :func:`check_url`, which

1. allows ``https`` only, unless ``ingest.allow_insecure_http`` is true (tests);
2. checks the host against the provider's allow-list (:func:`comfyvn.netpolicy.allowed_host_rules`,
   the one the enqueue check asks too): ``netpolicy.REMOTE_ALLOWLIST``, plus the configured
   ``ingest.providers.<name>.base_url`` (host and port), ``ingest.providers.<name>.allowed_hosts``
   and ``ingest.extra_allowed_hosts``;
3. resolves the host once (``ingest.host_overrides`` first, then DNS) and refuses it when an
   address is loopback, private, link-local, multicast or otherwise non-global, IPv6 spellings
   of them included (:func:`comfyvn.netpolicy.pin_address`, the rule webhooks use too), unless
   ``network.allow_private_addresses`` (or, while that is unset, ``ingest.allow_private_addresses``)
   is true;
4. returns a :class:`Target` whose ``connect_url`` names the checked IP address, so the
   connection goes exactly where the check looked (no DNS rebinding between check and
   connect); the original host travels in the ``Host`` header and, for https, as the TLS
   server name (SNI and certificate check).

Allow-list rules are described in :mod:`comfyvn.netpolicy`.  ``ingest.host_overrides`` maps a host name to
``"ip"`` or ``"ip:port"``: a static resolver for local mirrors and for tests whose fake
servers answer for real host names on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import netpolicy
from ..config import Workspace, get_setting
from ..netpolicy import allowed_host_rules, host_allowed, is_public_address
from ..netpolicy import split_rule as _split_rule
from .errors import RemoteError


@dataclass(frozen=True)
class Target:
    """A checked URL and the address the connection is pinned to."""

    url: str  # the URL as checked (original host name)
    scheme: str
    host: str  # lower-case host name or IP literal, without brackets
    port: int
    address: str  # the checked IP address to connect to
    connect_url: str  # ``url`` with the host replaced by ``address`` (and the override port)
    host_header: str  # value for the Host header

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def request_extensions(self) -> dict[str, Any]:
        """httpx request extensions: TLS server name = the original host, not the IP."""
        if self.scheme == "https" and not _is_ip(self.host):
            return {"sni_hostname": self.host}
        return {}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address_is_public(addr: str) -> bool:
    """Kept for callers: :func:`comfyvn.netpolicy.is_public_address` is the one rule."""
    return is_public_address(addr)


def _resolve(host: str, port: int, ws: Workspace | None) -> tuple[list[str], int]:
    """Addresses for ``host`` (override table first, then DNS) and the port to connect to."""
    overrides = get_setting("ingest.host_overrides", {}, ws) or {}
    if isinstance(overrides, Mapping):
        mapped = overrides.get(host) or overrides.get(f"{host}:{port}")
        if mapped:
            addr, new_port = _split_rule(str(mapped))
            return [addr], new_port or port
    if _is_ip(host):
        return [host], port
    try:
        return [str(a) for a in netpolicy.resolve(host, port)], port
    except socket.gaierror as exc:
        raise RemoteError(
            f"Cannot resolve host {host!r} ({exc.strerror or exc}); check the URL and your network.",
            code="remote.dns", retryable=True,
        ) from None


def check_url(url: str, *, provider: str, ws: Workspace | None = None, rules: list[str] | None = None) -> Target:
    """Check ``url`` against the scheme, host and address policy; raise :class:`RemoteError` if refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RemoteError(f"Not a valid URL: {exc}", code="remote.bad_url") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host:
        raise RemoteError(
            f"Not a downloadable URL (need https://host/...): {_display(url)}", code="remote.bad_url"
        )
    if parts.username or parts.password:
        raise RemoteError("URLs with user:password@ credentials are refused; use the provider's token "
                          "environment variable instead.", code="remote.bad_url")
    if scheme == "http" and not get_setting("ingest.allow_insecure_http", False, ws):
        raise RemoteError(
            f"Refusing plain http:// for {host}: remote pulls use https only "
            "(set ingest.allow_insecure_http for local test servers).",
            code="remote.insecure_scheme",
        )
    port = port or (443 if scheme == "https" else 80)
    rules = allowed_host_rules(provider, ws) if rules is None else rules
    if not host_allowed(host, port, rules):
        raise RemoteError(
            f"Host {host}{'' if port in (80, 443) else f':{port}'} is not on the allow-list for "
            f"provider {provider!r}; refusing to download from it.",
            code="remote.host_not_allowed",
        )
    addresses, connect_port = _resolve(host, port, ws)
    try:  # the one rule of remote pulls and webhooks: every address public, the first one pinned
        chosen = str(netpolicy.pin_address(host, addresses, what="Host", area="remote", ws=ws))
    except netpolicy.AddressRefused as exc:
        raise RemoteError(f"{exc}; refused.", code="remote.private_address") from None
    literal = f"[{chosen}]" if ":" in chosen else chosen
    netloc = literal if connect_port == (443 if scheme == "https" else 80) else f"{literal}:{connect_port}"
    connect_url = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_literal = f"[{host}]" if ":" in host else host
    host_header = host_literal if parts.port is None else f"{host_literal}:{parts.port}"
    return Target(url=urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, "")), scheme=scheme,
                  host=host, port=port, address=chosen, connect_url=connect_url, host_header=host_header)


def _display(url: str, limit: int = 200) -> str:
    """A URL for messages: without query string (signed URLs carry credentials) and bounded."""
    try:
        parts = urlsplit(url)
        shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    except ValueError:
        shown = "<invalid URL>"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


display_url = _display

__all__ = ["Target", "allowed_host_rules", "check_url", "display_url", "host_allowed"]
