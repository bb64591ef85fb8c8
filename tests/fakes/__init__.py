"""Reusable fakes for tests: local servers that answer like the real providers.

``tests.fakes.provider_server`` has :class:`FakeProviders` (a context manager), the
``provider_servers`` pytest fixture and a CLI (``python -m tests.fakes.provider_server``);
read its module docstring for how to start and configure them.
"""

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


def __getattr__(name: str):  # lazy, so ``python -m tests.fakes.provider_server`` runs cleanly
    if name in __all__:
        from . import provider_server

        return getattr(provider_server, name)
    raise AttributeError(name)
