"""The asset registry's parts and its maintenance.

Behind :class:`comfyvn.studio.core.asset_registry.AssetRegistry` (the facade, at the path the
seeds name): ``paths`` (the assets root, confinement), ``records`` (row codec, queries,
cursors), ``listeners`` (hook names, listener table, event-log writes), ``sidecars``,
``previews`` (thumbnail bookkeeping), ``journal`` (the move journal), ``placement``
(registration), ``updates``, ``removal``, ``recovery`` and ``errors``.  Above it, the
sidecar enforcer: ``scan``, ``audit``, ``derive`` and ``rebuild`` (the entry point).

The enforcer's names are loaded lazily so ``python -m comfyvn.registry.rebuild`` runs without a
warning (and importing a part of the registry does not import the enforcer above it).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FINDING_KINDS", "audit_sidecars", "derive_license", "derive_tags", "rebuild_from_disk"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import rebuild

        return getattr(rebuild, name)
    raise AttributeError(f"module 'comfyvn.registry' has no attribute {name!r}")
