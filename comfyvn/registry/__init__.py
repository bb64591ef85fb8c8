"""Registry maintenance: the sidecar enforcer and rebuilding a registry from the files on disk.

Names are loaded lazily so ``python -m comfyvn.registry.rebuild`` runs without a warning.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FINDING_KINDS", "audit_sidecars", "derive_license", "derive_tags", "rebuild_from_disk"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import rebuild

        return getattr(rebuild, name)
    raise AttributeError(f"module 'comfyvn.registry' has no attribute {name!r}")
