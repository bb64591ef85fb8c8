"""``HookMonitor``: the live event stream of the workspace (every process), with filter, pause and inspector."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from comfyvn.config import Workspace
from comfyvn.hooks import get_hook_bus
from comfyvn.hooks.events import utc_timestamp
from comfyvn.store import Database, SqliteDatabase
from comfyvn.store.transfer import display_url
from comfyvn.workbench import get_workbench

from . import theme
from .hook_monitor_model import HookMonitorModel, topic_options
from .live import LiveDashboard, LiveUpdater
from .table import DataTable

COLUMNS = [
    {"key": "id", "label": "#", "kind": "mono", "width": "56px"},
    {"key": "time", "label": "Time", "kind": "mono", "width": "100px"},
    {"key": "topic", "label": "Topic", "kind": "chip", "width": "220px"},
    {"key": "summary", "label": "Payload", "kind": "mono"},
]


class HookMonitor(LiveDashboard):
    """Shows the newest events of the event log, then streams new ones as any process commits them."""

    def __init__(self, db: Database | None = None, *, ws: Workspace | None = None, history: int = 100,
                 capacity: int = 1000, live: bool = True) -> None:
        self.db = db or get_workbench(ws).db
        self.bus = get_hook_bus(self.db)
        self.model = HookMonitorModel(self.bus, capacity=capacity)
        self.status = theme.StatusBar()
        self.updater: LiveUpdater | None = None
        self._build()
        self.model.load_history(history)
        self.render()
        if live:
            self.start_live()

    def _build(self) -> None:
        g = theme.guarded(self.status)
        self.header = theme.header("Hook monitor")
        self.topic = W.Dropdown(description="Topic", options=topic_options(), value="",
                                layout=W.Layout(width="300px"))
        self.topic.style.description_width = "44px"
        self.search = W.Text(description="Find", placeholder="uid, job id, path…", continuous_update=True,
                             layout=W.Layout(width="260px"))
        self.search.style.description_width = "36px"
        self.pause_button = W.ToggleButton(description="Pause", value=False, layout=W.Layout(width="auto"))
        self.clear_button = W.Button(description="Clear", layout=W.Layout(width="auto"))
        self.stats = W.HTML()
        self.topic.add_class("cvn-hooks-topic")
        self.search.add_class("cvn-hooks-find")
        self.pause_button.add_class("cvn-hooks-pause")
        self.topic.observe(g(lambda ch: self.set_filter(topic=ch["new"])), "value")
        self.search.observe(g(lambda ch: self.set_filter(text=ch["new"])), "value")
        self.pause_button.observe(g(lambda ch: self.set_paused(ch["new"])), "value")
        self.clear_button.on_click(g(lambda _b: self.clear()))
        bar = W.HBox([self.topic, self.search, self.pause_button, self.clear_button, self.stats])
        bar.add_class("cvn-toolbar")
        bar.add_class("cvn-card")
        self.table = DataTable(columns=COLUMNS, max_height=520,
                               empty_text="No events yet. Changes made by any process appear here as they commit.")
        self.table.on_click(g(lambda row_id, _s, _t: self.inspect(row_id)))
        self.inspector = W.HTML(self._inspector_html(None))
        left = W.VBox([self.table], layout=W.Layout(flex="1 1 auto", min_width="0"))
        right = W.VBox([theme.section("Payload"), self.inspector], layout=W.Layout(width="430px"))
        right.add_class("cvn-card")
        body = W.HBox([left, right], layout=W.Layout(grid_gap="14px", margin="10px 0 0 0", align_items="flex-start"))
        self.widget = theme.root_box([self.header, bar, body, self.status.widget], "cvn-hooks")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    @staticmethod
    def _inspector_html(env: dict | None) -> str:
        if env is None:
            return '<div class="cvn-empty">Click an event to inspect its full payload.</div>'
        head = (f'<div>{theme.chip(env["event"], "accent")} <span class="cvn-muted cvn-mono">#{env["id"]} · '
                f'{theme.esc(utc_timestamp(env["ts"]))}</span></div>')
        return head + theme.json_html(env)

    def render(self) -> None:
        m = self.model
        with m.lock:
            visible = m.visible()
            self.table.rows = [m.row(e) for e in visible]
            self.table.selected = [str(m.selected_id)] if m.selected_id is not None else []
            self.table.focused = str(m.selected_id) if m.selected_id is not None else ""
            held = len(m.held)
            self.pause_button.description = f"Resume ({held} new)" if m.paused else "Pause"
            self.pause_button.button_style = "warning" if m.paused else ""
            self.stats.value = (f'<span class="cvn-muted">{len(visible)} shown · {len(m.events)} buffered · '
                                f'{m.received} live</span>')
            live = self.updater is not None and self.updater.running
            # the workspace folder of an SQLite store, the (password-less) URL of a shared one
            where = self.db.path.parent.parent if isinstance(self.db, SqliteDatabase) else display_url(self.db.url)
            theme.set_header(self.header, "Hook monitor", f"every process on {where} · "
                             f"last event #{m.last_id}" + (" · paused" if m.paused else ""), live=live)

    def set_filter(self, topic: str | None = None, text: str | None = None) -> None:
        self.model.set_filter(topic=topic, text=text)
        self.render()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self.model.pause()
            self.status.info("Paused: new events are held back (not lost) until you resume.")
        else:
            n = self.model.resume()
            self.status.info(f"Resumed: {n} event{'s' if n != 1 else ''} arrived while paused.")
        if self.pause_button.value != paused:
            self.pause_button.value = paused
        self.render()

    def clear(self) -> None:
        self.model.clear()
        self.inspector.value = self._inspector_html(None)
        self.render()

    def inspect(self, row_id: str) -> None:
        env = self.model.inspect(row_id)
        self.inspector.value = self._inspector_html(env)
        self.render()

    # -- live ------------------------------------------------------------------------------
    def start_live(self) -> None:
        if self.updater is not None and self.updater.running:
            return
        self.updater = LiveUpdater(self.db, self._on_live, debounce=0.05, on_error=self._live_error,
                                   name="comfyvn-hook-monitor")
        self.updater.start(after_id=self.model.last_id)
        self.render()

    def _on_live(self, batch: list[dict]) -> None:
        self.model.receive(batch)
        self.render()

    def _live_error(self, exc: BaseException) -> None:
        self.status.error(exc, "Live update failed:")
