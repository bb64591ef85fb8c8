"""comfyvn's ipywidgets dashboards (installed as ``comfyvn_widgets``).

    from comfyvn_widgets import AssetGallery, QueueInspector, EnforcerReport, HookMonitor, workbench
    workbench()            # every dashboard in tabs (what notebooks/workbench.ipynb shows)

Each dashboard keeps its logic in a plain model class (``*_model.py``, testable without a
browser) and its widget tree thin; live updates come from a worker thread fed by the hook bus
(:mod:`comfyvn_widgets.live`), so changes made by any process appear without a reload.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AssetGallery", "EnforcerReport", "HookMonitor", "LibraryDashboard", "LicencesDashboard", "QueueInspector",
           "launch", "workbench"]

_LAZY = {
    "AssetGallery": ".gallery",
    "QueueInspector": ".queue_inspector",
    "EnforcerReport": ".enforcer_report",
    "HookMonitor": ".hook_monitor",
    "LibraryDashboard": ".library",
    "LicencesDashboard": ".licences",
    "launch": ".app",
    "workbench": ".app",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'comfyvn_widgets' has no attribute {name!r}")
