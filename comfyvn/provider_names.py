"""Providers: the names the workbench knows, their aliases, and which provider a URL is from.

The one registry of provider names.  Every place that takes a provider (enqueue, the metadata
mappers, state import, the HTTP API, the widgets) folds aliases with :func:`provider_name` or
:func:`canonical_provider`, so ``hf``, ``hugging_face`` and ``huggingface`` are one provider.
The code that talks to each provider's API lives in :mod:`comfyvn.ingest.providers`; the hosts a
provider's pulls may reach are network policy (:data:`comfyvn.netpolicy.REMOTE_ALLOWLIST`).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from .netpolicy import provider_for_host

LOCAL: Final = "local"
GENERIC: Final = "generic"
#: every provider, in the order the user interfaces list them
PROVIDERS: Final = ("local", "civitai", "huggingface", "furaffinity", "generic")
#: the providers that pull URLs
REMOTE_PROVIDERS: Final = ("civitai", "huggingface", "furaffinity", "generic")
#: providers whose files are models unless their name says otherwise
MODEL_PROVIDERS: Final = frozenset({"civitai", "huggingface"})
#: other spellings people use -> the provider
ALIASES: Final = {"hf": "huggingface", "hugging_face": "huggingface", "hugging-face": "huggingface",
                  "civit": "civitai"}
#: the names that ask for a guess from the URL
GUESS: Final = frozenset({"", "auto", "remote"})
#: the hosts of each provider's own site (the URLs people paste)
CANONICAL_HOSTS: Final = {
    "civitai": frozenset({"civitai.com", "www.civitai.com", "api.civitai.com", "civitai.red", "www.civitai.red"}),
    "huggingface": frozenset({"huggingface.co", "www.huggingface.co", "hf.co"}),
}


def provider_name(provider: str) -> str:
    """``provider`` trimmed, lower-cased and with its alias folded (an unknown name is returned
    as such: callers check it against :data:`PROVIDERS`)."""
    name = provider.strip().lower()
    return ALIASES.get(name, name)


def guess_provider(url: str) -> str:
    """The provider a URL or reference is from: ``civitai:``/``urn:air:`` and ``hf://`` forms,
    the provider's own hosts, any host on a provider's built-in allow-list, else ``generic``."""
    low = (url or "").strip().lower()
    if low.startswith(("civitai:", "urn:air:")):
        return "civitai"
    if low.startswith("hf://"):
        return "huggingface"
    try:
        host = (urlsplit(low).hostname or "") if "://" in low else ""
    except ValueError:
        host = ""
    for provider, hosts in CANONICAL_HOSTS.items():
        if host in hosts:
            return provider
    return (provider_for_host(host) if host else None) or GENERIC


def canonical_provider(provider: str | None, remote_url: str | None = None) -> str:
    """The provider key: aliases folded; ``None``/``"auto"``/``"remote"`` (and ``"local"`` when
    there is a URL: a URL is never a local file) guessed from ``remote_url``; without a URL a
    guess is ``local``."""
    name = provider_name(provider or "")
    if name in GUESS or (name == LOCAL and remote_url is not None):
        return LOCAL if remote_url is None else guess_provider(remote_url)
    return name


__all__ = ["ALIASES", "CANONICAL_HOSTS", "GENERIC", "GUESS", "LOCAL", "MODEL_PROVIDERS", "PROVIDERS",
           "REMOTE_PROVIDERS", "canonical_provider", "guess_provider", "provider_name"]
