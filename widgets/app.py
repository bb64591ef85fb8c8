"""Entry points the notebooks call: ``launch(name)`` and ``workbench()``.

Both return a widget that is always displayable: a dashboard that cannot start (a broken
config file, an unreadable database) becomes a readable message instead of a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from comfyvn.config import workspace

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


DASHBOARDS: dict[str, tuple[str, Callable[..., Any]]] = {
    "gallery": ("Asset gallery", _gallery),
    "queue": ("Ingest queue", _queue),
    "enforcer": ("Sidecar enforcer", _enforcer),
    "hooks": ("Hook monitor", _hooks),
}


def build(name: str, **kwargs: Any) -> tuple[Any, W.Widget]:
    """``(dashboard or None, widget)``; the widget is an error panel when the dashboard failed to start."""
    if name not in DASHBOARDS:
        raise ValueError(f"unknown dashboard {name!r}; choose one of {', '.join(DASHBOARDS)}")
    title, factory = DASHBOARDS[name]
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
    tabs = W.Tab()
    children, titles = [], []
    for name, (title, _f) in DASHBOARDS.items():
        _dash, widget = build(name, **kwargs.get(name, {}))
        children.append(widget)
        titles.append(title)
    tabs.children = children
    for i, title in enumerate(titles):
        tabs.set_title(i, title)
    tabs.add_class("cvn-tab")
    head = W.HTML(f'<div class="cvn-header"><span class="cvn-title">comfyvn workbench</span>'
                  f'<span class="cvn-subtitle cvn-mono">{theme.esc(workspace().root)}</span></div>')
    return theme.root_box([head, tabs], "cvn-workbench")
