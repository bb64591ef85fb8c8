"""Which network addresses the workbench may connect to (remote pulls and webhook deliveries).

One rule for every outgoing connection: an address is *public* when it is globally routable
and not multicast, and, for IPv6, when every IPv4 address it embeds is public too.  The
embeddings checked are the IPv4-mapped (``::ffff:a.b.c.d``), IPv4-compatible (``::a.b.c.d``,
e.g. ``[::7f00:1]``), IPv4-translated (``::ffff:0:a.b.c.d``), NAT64 (``64:ff9b::/96`` and
``64:ff9b:1::/48``), 6to4 (``2002::/16``) and Teredo (``2001::/32``) forms, so a loopback or
private IPv4 address cannot be smuggled in through its IPv6 spelling.

One setting allows private targets everywhere: ``network.allow_private_addresses`` (default
``null``: not set).  While it is not set, the older per-area keys are still read:
``ingest.allow_private_addresses`` for remote pulls and ``hooks.allow_private_webhook_targets``
for webhooks.  One error type: :class:`AddressRefused`.

**Pinning.**  A host name is resolved once (:func:`resolve`) and :func:`pin_address` picks the
address to connect to: the first one, when every address the name resolves to is public (or
private targets are allowed).  Remote pulls and webhook deliveries then connect to that address,
never to a second lookup, so DNS rebinding between the check and the connection is impossible.

**Hosts.**  Remote pulls may connect only to the hosts allow-listed for their provider
(:func:`allowed_host_rules`): the built-in :data:`REMOTE_ALLOWLIST`, the host and port of the
configured ``ingest.providers.<name>.base_url``, ``ingest.providers.<name>.allowed_hosts`` and
``ingest.extra_allowed_hosts`` (a list for every provider, or ``{"<provider>": [...], "*": [...]}``).
A rule is a host name or a pattern whose ``*`` stays inside one DNS label
(``cdn-lfs*.hf.co``), optionally with ``:port`` to allow one port only (``127.0.0.1:8765``).
The enqueue check and every hop of a download ask the same :func:`is_host_allowed` /
:func:`host_allowed`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from .config import ConfigError, Workspace, get_setting
from .errors import Refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "network.allow_private_addresses"
#: the per-area keys read while ``network.allow_private_addresses`` is not set (compatibility)
LEGACY_SETTINGS = {"remote": "ingest.allow_private_addresses", "webhook": "hooks.allow_private_webhook_targets"}

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


# provider -> built-in host rules of its remote pulls
REMOTE_ALLOWLIST: Final[dict[str, tuple[str, ...]]] = {
    "civitai": (
        "civitai.com",
        "api.civitai.com",
        "image.civitai.com",
        "civitai-delivery-worker-prod.*.r2.cloudflarestorage.com",
    ),
    "huggingface": (
        "huggingface.co",
        "cas-bridge.xethub.hf.co",
        "cdn-lfs*.huggingface.co",
        "cdn-lfs*.hf.co",
        "us.aws.cdn.hf.co",
    ),
    "furaffinity": (
        "furaffinity.net",
        "www.furaffinity.net",
        "d.furaffinity.net",
        "t.furaffinity.net",
    ),
    "generic": (),
}
#: settings that add hosts to the allow-list (``{provider}`` is filled in)
HOST_SETTINGS: Final = ("ingest.providers.{provider}.allowed_hosts", "ingest.extra_allowed_hosts")


class AddressRefused(Refused, ValueError):
    """An outgoing connection to a loopback, private, link-local or reserved address was refused."""


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address an IPv6 address carries by a standard embedding (often none)."""
    out: list[ipaddress.IPv4Address] = []
    value = int(ip)
    if ip.ipv4_mapped is not None:
        out.append(ip.ipv4_mapped)
    if ip in _COMPATIBLE and value > 1:  # ::a.b.c.d (:: and ::1 are themselves non-public)
        out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _TRANSLATED or any(ip in net for net in _NAT64):
        out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)
    return out


def url_port(parts: SplitResult) -> int | None:
    """The explicit port of a split URL (``None`` when it names none); ValueError when it is no
    port: 0, above 65535 or not a number.  The one port rule for every URL the server calls."""
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port <= 65535:
        shown = parts.netloc.rsplit(":", 1)[-1][:20]
        raise ValueError(f"invalid port {shown!r}: use a number from 1 to 65535 or none")
    return port


def parse_address(addr: str | IPAddress) -> IPAddress:
    """An IP address from a literal (a ``%zone`` suffix is ignored); ValueError if it is none."""
    if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return addr
    return ipaddress.ip_address(str(addr).strip("[]").split("%", 1)[0])


def is_public_address(addr: str | IPAddress) -> bool:
    """True when ``addr`` is globally routable, not multicast, and embeds no non-public IPv4."""
    ip = parse_address(addr)
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        return all(v4.is_global and not v4.is_multicast for v4 in embedded_ipv4(ip))
    return True


def allow_private(area: str, ws: Workspace | None = None) -> bool:
    """Whether ``area`` (``"remote"`` or ``"webhook"``) may connect to non-public addresses."""
    value: Any = get_setting(SETTING, None, ws)
    if value is None:
        value = get_setting(LEGACY_SETTINGS[area], False, ws)
    if not isinstance(value, bool):
        raise ConfigError(f"{SETTING} must be true or false, got {value!r}")
    return value


def setting_hint(area: str) -> str:
    """How to allow private targets, for error messages."""
    return f"set {SETTING} (or the older {LEGACY_SETTINGS[area]}) to true in config/comfyvn.json to allow it"


def check_address(addr: str | IPAddress, *, what: str, area: str, ws: Workspace | None = None,
                  allowed: bool | None = None) -> IPAddress:
    """Return ``addr`` parsed, or raise :class:`AddressRefused` when it is not public and
    private targets are not allowed (``allowed`` overrides the setting)."""
    ip = parse_address(addr)
    if is_public_address(ip):
        return ip
    if allowed if allowed is not None else allow_private(area, ws):
        return ip
    raise AddressRefused(f"{what} {ip} is a private, loopback, link-local or reserved address; {setting_hint(area)}")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order (one lookup; duplicates and
    ``%zone`` suffixes dropped).  OSError (``socket.gaierror``) when it does not resolve."""
    out: list[IPAddress] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = parse_address(str(info[4][0]))
        if addr not in out:
            out.append(addr)
    return out


def pin_address(host: str, addresses: Iterable[str | IPAddress], *, what: str, area: str,
                ws: Workspace | None = None, allowed: bool | None = None,
                public: Callable[[IPAddress], bool] = is_public_address) -> IPAddress:
    """The address a connection to ``host`` goes to: the first of ``addresses`` (what ``host``
    resolved to; entries that are no address are skipped).  :class:`AddressRefused` when there
    is none, or when any is not ``public`` while private targets are not allowed (``allowed``
    overrides the setting of ``area``)."""
    parsed: list[IPAddress] = []
    for addr in addresses:
        try:
            parsed.append(parse_address(addr))
        except ValueError:
            continue
    if not parsed:
        raise AddressRefused(f"{what} {host} resolves to no usable address")
    if not (allowed if allowed is not None else allow_private(area, ws)):
        bad = [str(a) for a in parsed if not public(a)]
        if bad:
            raise AddressRefused(f"{what} {host} resolves to private or reserved address(es) {', '.join(bad)}; "
                                 f"{setting_hint(area)}")
    return parsed[0]


# ---------------------------------------------------------------------------- host allow-list
def split_rule(rule: str) -> tuple[str, int | None]:
    """``(host, port)`` of an allow-list rule (``[v6]:port``, ``host:port``; port None: any)."""
    rule = rule.strip().lower()
    if rule.startswith("["):  # [v6]:port
        end = rule.find("]")
        host, rest = rule[1:end], rule[end + 1:]
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if rule.count(":") == 1:
        host, _, port = rule.partition(":")
        if port.isdigit():
            return host, int(port)
    return rule, None


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    host = pattern.strip().lower().rstrip(".")
    if host.startswith("[") and "]" in host:  # [::1]:port
        host = host[1:host.index("]")]
    elif host.count(":") == 1:  # host:port -> host
        host = host.split(":", 1)[0]
    return re.compile("^" + ".".join(re.escape(label).replace(r"\*", "[a-z0-9-]*")
                                       for label in host.split(".")) + "$")


def _clean_host(host: str) -> str:
    return (host or "").strip().lower().rstrip(".").strip("[]")


def host_matches(host: str, pattern: str) -> bool:
    """True when ``host`` matches one rule's host part (``*`` stays inside one DNS label)."""
    return bool(_pattern_regex(pattern).match(_clean_host(host)))


def _configured_hosts(value: Any, provider: str) -> list[str]:
    """The host rules one setting gives ``provider``: a string, a list, or a mapping by provider
    (``"*"``: every provider)."""
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        value = [*_configured_hosts(value.get(provider), provider), *_configured_hosts(value.get("*"), provider)]
    return [str(x) for x in value if x] if isinstance(value, Iterable) else []


def allowed_host_rules(provider: str, ws: Workspace | None = None) -> list[str]:
    """Every allow-list rule of ``provider`` (see the module docstring), duplicates removed."""
    rules: list[str] = list(REMOTE_ALLOWLIST.get(provider, ()))
    base = get_setting(f"ingest.providers.{provider}.base_url", None, ws)
    if isinstance(base, str) and base:
        parts = urlsplit(base)
        if parts.hostname:
            default_port = 443 if parts.scheme == "https" else 80
            host = parts.hostname.lower()
            host = f"[{host}]" if ":" in host else host
            rules.append(f"{host}:{parts.port or default_port}")
    for key in HOST_SETTINGS:
        rules.extend(_configured_hosts(get_setting(key.format(provider=provider), None, ws), provider))
    return list(dict.fromkeys(rules))


def host_allowed(host: str, port: int | None, rules: Iterable[str]) -> bool:
    """``host`` (on ``port``; None: any port) matches a rule; a rule with a port matches that port only."""
    if not host:
        return False
    for rule in rules:
        _pattern, rule_port = split_rule(rule)
        if rule_port is not None and port is not None and rule_port != port:
            continue
        if host_matches(host, rule):
            return True
    return False


def is_host_allowed(host: str, provider: str, ws: Workspace | None = None, port: int | None = None) -> bool:
    """May a remote pull of ``provider`` connect to ``host`` (on ``port``; None: on some port)?"""
    return host_allowed(host, port, allowed_host_rules(provider, ws))


def provider_for_host(host: str) -> str | None:
    """The provider whose built-in allow-list covers ``host`` (None if none does)."""
    for provider, patterns in REMOTE_ALLOWLIST.items():
        if any(host_matches(host, p) for p in patterns):
            return provider
    return None


__all__ = ["HOST_SETTINGS", "REMOTE_ALLOWLIST", "SETTING", "AddressRefused", "allow_private", "allowed_host_rules",
           "check_address", "embedded_ipv4", "host_allowed", "host_matches", "is_host_allowed", "is_public_address",
           "parse_address", "pin_address", "provider_for_host", "resolve", "setting_hint", "split_rule",
           "url_port"]
