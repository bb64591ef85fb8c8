"""Licences you can ship with (issue 17): use profiles, the check, the manifest and overrides.

    from comfyvn.licences import check_project, render_manifest, set_override
    result = check_project(registry, use="commercial")   # every asset: allowed / allowed_with_duties /
    result["ok"]                                        # blocked / unknown, with reasons and sources
    text = render_manifest(result, "md")                 # credits and notices (same registry, same bytes)

Built on :mod:`comfyvn.rights` (licence ids, structured terms, base-model licences): this package
adds what a release needs from them, not a second vocabulary.  ``comfyvn-licences`` is the CLI.
Kept free of eager imports so :mod:`comfyvn.store.migrations` may import :mod:`.schema`.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "UseProfile": ".profiles", "use_profiles": ".profiles", "use_profile": ".profiles",
    "VERDICTS": ".check", "check_project": ".check", "check_assets": ".check",
    "set_override": ".overrides", "clear_override": ".overrides", "current_overrides": ".overrides",
    "override_history": ".overrides", "OverrideNotFoundError": ".overrides",
    "render_manifest": ".manifest", "MANIFEST_FORMATS": ".manifest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'comfyvn.licences' has no attribute {name!r}")
