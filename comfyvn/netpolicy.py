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
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import SplitResult

from .config import ConfigError, Workspace, get_setting
from .errors import Refused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "network.allow_private_addresses"
#: the per-area keys read while ``network.allow_private_addresses`` is not set (compatibility)
LEGACY_SETTINGS = {"remote": "ingest.allow_private_addresses", "webhook": "hooks.allow_private_webhook_targets"}

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


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


__all__ = ["SETTING", "AddressRefused", "allow_private", "check_address", "embedded_ipv4", "is_public_address",
           "parse_address", "setting_hint", "url_port"]
