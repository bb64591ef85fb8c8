"""Studio core services (the asset registry lives here, at the path the seed names).

``from comfyvn.studio.core import AssetRegistry`` works as in the original (loaded lazily).
"""

from __future__ import annotations

from typing import Any

__all__ = ["AssetRegistry"]


def __getattr__(name: str) -> Any:
    if name == "AssetRegistry":
        from .asset_registry import AssetRegistry

        return AssetRegistry
    raise AttributeError(f"module 'comfyvn.studio.core' has no attribute {name!r}")
