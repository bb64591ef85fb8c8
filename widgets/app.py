"""Entry points the notebooks call: ``launch(name)`` and ``workbench()``.

Both return a widget that is always displayable: a dashboard that cannot start (a broken
config file, an unreadable database) becomes a readable message instead of a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from comfyvn.config import NotAWorkspaceError, existing_workspace, workspace

from . import theme

log = logging.getLogger("comfyvn.widgets.app")


def _gallery(**kw: Any):
    from .gallery import AssetGallery

    return AssetGallery(**kw)


def _queue(**kw: Any):
    from .queue_inspector import QueueInspector

    return QueueInspector(**kw)


def _enforcer(**kw: Any):
    from .enforcer_report import EnforcerReport

    return EnforcerReport(**kw)


def _hooks(**kw: Any):
    from .hook_monitor import HookMonitor

    return HookMonitor(**kw)


def _licences(**kw: Any):
    from .licences import LicencesDashboard

    return LicencesDashboard(**kw)


def _library(**kw: Any):
    from .library import LibraryDashboard

    return LibraryDashboard(**kw)


DASHBOARDS: dict[str, tuple[str, Callable[..., Any]]] = {
    "gallery": ("Asset gallery", _gallery),
    "queue": ("Ingest queue", _queue),
    "enforcer": ("Sidecar enforcer", _enforcer),
    "hooks": ("Hook monitor", _hooks),
    "licences": ("Licences", _licences),
    "library": ("Library", _library),
}


NO_WORKSPACE_HINT = ("open the workbench with 'comfyvn-workbench lab --workspace DIR' (or voila), or set "
                     "COMFYVN_HOME to the workspace's absolute path; 'comfyvn-workbench demo' seeds a demo workspace")


def no_workspace_panel(title: str) -> W.Widget | None:
    """An error panel when ``COMFYVN_HOME`` (or the kernel's folder) is not a workspace, else None.

    The dashboards never create a workspace: a typo'd or relative ``COMFYVN_HOME`` (a kernel runs
    in the notebook's folder) would otherwise show an empty, new workspace as if all were well.
    """
    try:
        existing_workspace(hint=NO_WORKSPACE_HINT)
    except NotAWorkspaceError as exc:
        log.warning("%s: %s", title, exc)
        return theme.root_box([theme.error_panel(f"{title}: no comfyvn workspace here.", str(exc))],
                              "cvn-failed")
    return None


def build(name: str, **kwargs: Any) -> tuple[Any, W.Widget]:
    """``(dashboard or None, widget)``; the widget is an error panel when the dashboard failed to start."""
    if name not in DASHBOARDS:
        raise ValueError(f"unknown dashboard {name!r}; choose one of {', '.join(DASHBOARDS)}")
    title, factory = DASHBOARDS[name]
    if not kwargs and (panel := no_workspace_panel(title)) is not None:
        return None, panel
    try:
        dash = factory(**kwargs)
        return dash, dash.widget
    except Exception as exc:  # shown to the person; unexpected ones are logged by friendly_error
        message = theme.friendly_error(exc)
        log.warning("%s could not start: %s", title, message)
        where = workspace().root
        panel = theme.root_box([theme.error_panel(f"The {title.lower()} could not start.",
                                                  f"{message} (workspace: {where})")], "cvn-failed")
        return None, panel


def launch(name: str, **kwargs: Any) -> W.Widget:
    """The widget of one dashboard (``gallery``, ``queue``, ``enforcer`` or ``hooks``)."""
    return build(name, **kwargs)[1]


def workbench(**kwargs: Any) -> W.Widget:
    """The four dashboards in tabs, on the workspace of ``COMFYVN_HOME``."""
    if not kwargs and (panel := no_workspace_panel("comfyvn workbench")) is not None:
        return panel
    tabs = W.Tab()
    children, titles, dashes = [], [], {}
    for name, (title, _f) in DASHBOARDS.items():
        dashes[name], widget = build(name, **kwargs.get(name, {}))
        children.append(widget)
        titles.append(title)
    tabs.children = children
    for i, title in enumerate(titles):
        tabs.set_title(i, title)
    from .licences import link_workbench

    link_workbench(tabs, dashes, list(DASHBOARDS))  # "Open in gallery" from the Licences tab
    tabs.add_class("cvn-tab")
    head = W.HTML(f'<div class="cvn-header"><span class="cvn-title">comfyvn workbench</span>'
                  f'<span class="cvn-subtitle cvn-mono">{theme.esc(workspace().root)}</span></div>')
    return theme.root_box([head, tabs], "cvn-workbench")
