"""Reusable fakes for tests: local servers that answer like the real providers.

``tests.fakes.provider_server`` has :class:`FakeProviders` (a context manager), the
``provider_servers`` pytest fixture and a CLI (``python -m tests.fakes.provider_server``);
read its module docstring for how to start and configure them.
"""

from .provider_server import (
    CIVITAI_CDN_HOST,
    CIVITAI_MODEL_ID,
    CIVITAI_OLD_VERSION_ID,
    CIVITAI_VERSION_ID,
    EVIL_HOST,
    HF_CDN_HOST,
    HF_GATED_REPO,
    HF_REPO,
    FakeProviders,
    Payload,
)

__all__ = [
    "CIVITAI_CDN_HOST",
    "CIVITAI_MODEL_ID",
    "CIVITAI_OLD_VERSION_ID",
    "CIVITAI_VERSION_ID",
    "EVIL_HOST",
    "HF_CDN_HOST",
    "HF_GATED_REPO",
    "HF_REPO",
    "FakeProviders",
    "Payload",
]
