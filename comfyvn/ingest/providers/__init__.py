"""Provider resolvers: a user's URL or id -> :class:`RemotePlan` via the provider's API.

Adding a provider: a module with ``NAME``, ``plan(remote_url, metadata, ws)``, ``map_error``
(and optionally ``on_redirect``), registered in :data:`RESOLVERS`, its name in
:mod:`comfyvn.provider_names` and its hosts in the allow-list (``netpolicy.REMOTE_ALLOWLIST``).  Any other
provider name gets the generic resolver: a direct https URL on a host allow-listed for that
provider, checked against ``metadata["sha256"]`` / ``metadata["size"]`` when given.
"""

from __future__ import annotations

import re
from types import ModuleType
from urllib.parse import unquote, urlsplit

from ...config import Workspace
from ...provider_names import ALIASES, canonical_provider
from ..errors import RemoteError
from ..netguard import allowed_host_rules, check_url
from . import civitai, huggingface
from .base import RemotePlan, check_reference_url, safe_filename

#: provider -> the module that resolves its references (the others use :func:`plan_generic`)
RESOLVERS: dict[str, ModuleType] = {civitai.NAME: civitai, huggingface.NAME: huggingface}
PROVIDERS = RESOLVERS  # the older name


def get_provider(name: str) -> ModuleType | None:
    """The resolver module of provider ``name`` (aliases accepted), None for the generic ones."""
    return RESOLVERS.get(canonical_provider(name))


def plan_generic(provider: str, remote_url: str, metadata: dict | None, ws: Workspace | None) -> RemotePlan:
    meta = metadata or {}
    url = (remote_url or "").strip()
    check_reference_url(url)
    if not allowed_host_rules(provider, ws):
        raise RemoteError(f"Remote pulls are not enabled for provider {provider!r}: it has no allow-listed hosts "
                          "(add them to ingest.extra_allowed_hosts or netpolicy.REMOTE_ALLOWLIST).",
                          code="remote.provider_unsupported")
    check_url(url, provider=provider, ws=ws)  # scheme / allow-list / address, before anything else
    sha = str(meta.get("sha256") or "").strip().lower() or None
    if sha is not None and not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise RemoteError("metadata.sha256 must be 64 hex characters.", code="remote.bad_metadata")
    size = meta.get("size")
    try:
        size = int(size) if size not in (None, "") else None
    except (TypeError, ValueError):
        raise RemoteError("metadata.size must be a whole number of bytes.", code="remote.bad_metadata") from None
    name = meta.get("filename") or unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return RemotePlan(provider=provider, source_url=url, download_url=url, filename=safe_filename(str(name)),
                      expected_sha256=sha, expected_size=size, provider_metadata={}, headers={})


__all__ = ["ALIASES", "PROVIDERS", "RESOLVERS", "RemotePlan", "canonical_provider", "get_provider", "plan_generic"]
