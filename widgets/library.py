"""``LibraryDashboard``: library roots, the running scan's progress, duplicates, "scan" and "identify now"."""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as W

from comfyvn.config import Workspace
from comfyvn.studio.core.asset_registry import AssetRegistry
from comfyvn.workbench import get_workbench

from . import theme
from .library_model import LIBRARY_TOPICS, LibraryModel, human_bytes
from .live import LiveDashboard, LiveUpdater
from .table import DataTable

COLUMNS = [
    {"key": "name", "label": "Root", "kind": "mono", "width": "120px"},
    {"key": "path", "label": "Folder", "kind": "mono"},
    {"key": "layout", "label": "Layout", "width": "80px"},
    {"key": "files", "label": "Files", "width": "70px"},
    {"key": "bytes", "label": "Bytes", "width": "90px"},
    {"key": "identified", "label": "Identified", "width": "90px"},
    {"key": "unidentified", "label": "Unidentified", "width": "100px"},
    {"key": "missing", "label": "Missing", "kind": "chip", "width": "80px"},
    {"key": "available", "label": "Disk", "kind": "chip", "width": "100px"},
]


class LibraryDashboard(LiveDashboard):
    def __init__(self, registry: AssetRegistry | None = None, *, project_id: str | None = None,
                 ws: Workspace | None = None, live: bool = True) -> None:
        self.registry = registry or get_workbench(ws).registry(project_id)
        self.model = LibraryModel(self.registry)
        self.status = theme.StatusBar()
        self.updater: LiveUpdater | None = None
        self._build()
        self.model.refresh()
        self.render()
        if live:
            self.start_live()

    def _build(self) -> None:
        g = theme.guarded(self.status)
        self.header = theme.header("Library", "folders registered in place")
        self.scan_button = W.Button(description="Scan now", icon="refresh", layout=W.Layout(width="auto"))
        self.identify_button = W.Button(description="Identify now", icon="search", layout=W.Layout(width="auto"))
        self.scan_button.add_class("cvn-library-scan")
        self.identify_button.add_class("cvn-library-identify")
        self.scan_button.on_click(g(lambda _b: self.scan()))
        self.identify_button.on_click(g(lambda _b: self.identify()))
        self.bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="320px"))
        self.bar_label = W.HTML()
        toolbar = W.HBox([self.scan_button, self.identify_button, self.bar, self.bar_label])
        toolbar.add_class("cvn-toolbar")
        toolbar.add_class("cvn-card")
        self.table = DataTable(columns=COLUMNS, max_height=300,
                               empty_text="No library roots. Add {name, path, layout, sidecars} entries to "
                                          "library.roots in config/comfyvn.json, then scan.")
        self.summary = W.HTML()
        self.duplicates = W.HTML()
        self.widget = theme.root_box([self.header, toolbar, self.table, self.summary, theme.section("Duplicates"),
                                      self.duplicates, self.status.widget], "cvn-library")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- actions ---------------------------------------------------------------------------
    def scan(self) -> dict:
        started = self.model.scan()
        self.status.info(f"Scan {started['scan_id']} of {', '.join(started['roots'])} started.")
        return started

    def identify(self, wait: bool = False) -> threading.Thread:
        """Identify in a thread (it paces itself to the provider's rate limit); ``wait`` joins it."""
        def work() -> None:
            try:
                self.model.identify()
                self.model.refresh()
                self.status.ok(self.model.identify_text())
            except Exception as exc:
                self.status.error(exc, "Identify failed: ")
            self.render()

        self.identify_button.disabled = True
        thread = threading.Thread(target=work, name="comfyvn-library-identify", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    # -- live ------------------------------------------------------------------------------
    def start_live(self) -> None:
        from comfyvn.hooks import get_hook_bus

        def refresh(batch: list[dict]) -> None:
            if self.model.apply_events(batch):
                self.model.refresh()
            self.render()

        self.updater = LiveUpdater(self.registry.db, refresh, topics=[*LIBRARY_TOPICS, "on_asset_registered",
                                                                      "on_asset_removed"],
                                   on_error=lambda exc: self.status.error(exc), name="comfyvn-library-live")
        self.updater.start(after_id=get_hook_bus(self.registry.db).last_id())
        self.render()

    def render(self) -> None:
        m = self.model
        with m.lock:
            self.table.rows = m.rows()
            fraction, text = m.progress_text()
            self.bar.value = fraction
            self.bar_label.value = f'<span class="cvn-mono">{theme.esc(text)}</span>'
            self.scan_button.disabled = m.scanning
            self.identify_button.disabled = m.identifying
            last = m.last
            self.summary.value = ("<div class='cvn-card'>Last scan: "
                                  + (theme.esc(f"{last.get('files', 0)} files ({human_bytes(last.get('bytes'))}), "
                                               f"{last.get('registered', 0)} registered, {last.get('moved', 0)} moved, "
                                               f"{last.get('missing', 0)} missing, {last.get('errors', 0)} errors, "
                                               f"read {human_bytes(last.get('hashed_bytes'))} in "
                                               f"{last.get('seconds', 0)} s") if last else "never")
                                  + "</div>")
            d = m.duplicates
            items = "".join(
                f"<li><span class='cvn-mono'>{theme.esc(g['sha256'][:12])}</span> {human_bytes(g['size'])} × "
                f"{g['copies']}: " + ", ".join(f"<span class='cvn-mono'>{theme.esc(p['path'])}</span>"
                                             for p in g["paths"]) + "</li>" for g in d["groups"][:50])
            self.duplicates.value = (f"<div>{len(d['groups'])} contents held by {d['files']} files; "
                                     f"<b>{human_bytes(d['reclaimable_bytes'])}</b> reclaimable (nothing is deleted "
                                     f"here).</div><ul>{items}</ul>")
            theme.set_header(self.header, "Library", f"{len(m.status.get('roots', []))} roots · project "
                             f"{self.registry.project_id}", live=self.updater is not None and self.updater.running)


__all__ = ["LibraryDashboard"]
