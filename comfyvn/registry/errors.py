"""The registry's errors (``comfyvn.studio.core.asset_registry`` re-exports them)."""

from __future__ import annotations

from ..errors import ComfyvnError, Conflict, NotFound


class AssetRegistryError(ComfyvnError):
    """Base class for registry errors a caller can act on."""


class AssetCollisionError(Conflict, AssetRegistryError):
    """A different file already sits at the destination path."""


class AssetNotFoundError(NotFound, AssetRegistryError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "asset not found"
