"""``QueueInspector``: the ingest queue dashboard (counts, jobs, progress, actions, enqueue form, flags)."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from comfyvn.config import Workspace
from comfyvn.ingest.mappers import PROVIDERS, REMOTE_PROVIDERS
from comfyvn.ingest.queue import STATUSES, AssetIngestQueue
from comfyvn.workbench import get_workbench

from . import theme
from .live import LiveDashboard, LiveUpdater
from .queue_model import ACTIONS, STATUS_TONES, EnqueueForm, FormError, QueueModel
from .table import DataTable
from .theme import chip, esc

COLUMNS = [
    {"key": "job", "label": "Job", "kind": "mono", "width": "110px"},
    {"key": "created", "label": "Queued", "kind": "mono", "width": "76px"},
    {"key": "status", "label": "Status", "kind": "chip", "width": "100px"},
    {"key": "provider", "label": "Provider", "kind": "text", "width": "92px"},
    {"key": "name", "label": "File", "kind": "text"},
    {"key": "type", "label": "Type", "kind": "text", "width": "96px"},
    {"key": "progress", "label": "Progress", "kind": "progress", "width": "190px"},
    {"key": "note", "label": "Notes", "kind": "text"},
]
INGEST_TOPICS = ["on_asset_ingest_*"]
TYPE_HINTS = ["backgrounds", "characters", "props", "ui", "audio", "models", "loras"]

_CSS = """
.cvn-queue .cvn-side { width: 370px; min-width: 320px; }
.cvn-queue .cvn-main { flex: 1 1 auto; min-width: 0; }
.cvn-results { font-size: 12.5px; }
.cvn-results .r { padding: 2px 0; }
.cvn-results .r.ok::before { content: "\\2713  "; color: #047857; font-weight: 700; }
.cvn-results .r.bad::before { content: "\\2717  "; color: #b91c1c; font-weight: 700; }
.cvn-queue .cvn-stat.active { border-color: #4f46e5; box-shadow: 0 0 0 1px #4f46e5; }
"""


def _field(label: str, widget: W.Widget, error: W.HTML, help_text: str = "") -> W.VBox:
    parts: list[W.Widget] = [W.HTML(f'<div class="cvn-form-label">{esc(label)}</div>'), widget]
    if help_text:
        parts.append(W.HTML(f'<div class="cvn-muted" style="font-size:11.5px">{esc(help_text)}</div>'))
    parts.append(error)
    return W.VBox(parts, layout=W.Layout(margin="0 0 6px 0"))


class QueueInspector(LiveDashboard):
    """Jobs of the workspace's ingest queue, updated live from every process."""

    def __init__(self, queue: AssetIngestQueue | None = None, *, ws: Workspace | None = None, live: bool = True) -> None:
        self.queue = queue or get_workbench(ws).queue()
        self.model = QueueModel(self.queue)
        self.status = theme.StatusBar()
        self.updater: LiveUpdater | None = None
        self._build()
        self.model.load()
        self.render()
        if live:
            self.start_live()

    # -- widget tree -----------------------------------------------------------------------
    def _build(self) -> None:
        g = theme.guarded(self.status)
        self.header = theme.header("Ingest queue")
        self.flags = W.HTML()
        self.counts = W.HTML()
        self.status_filter = W.Dropdown(description="Status", options=[("All statuses", "")] + [(s, s) for s in STATUSES],
                                        value="", layout=W.Layout(width="210px"))
        self.provider_filter = W.Dropdown(description="Provider", options=[("All providers", "")] +
                                          [(p, p) for p in PROVIDERS], value="", layout=W.Layout(width="220px"))
        for w, cls in ((self.status_filter, "status"), (self.provider_filter, "provider")):
            w.style.description_width = "58px"
            w.add_class(f"cvn-queue-filter-{cls}")
        self.refresh_button = W.Button(description="Refresh", layout=W.Layout(width="auto"))
        self.status_filter.observe(g(lambda _c: self._filter()), "value")
        self.provider_filter.observe(g(lambda _c: self._filter()), "value")
        self.refresh_button.on_click(g(lambda _b: self.refresh()))
        filters = W.HBox([self.status_filter, self.provider_filter, self.refresh_button])
        filters.add_class("cvn-toolbar")

        self.table = DataTable(columns=COLUMNS, max_height=440,
                               empty_text="No jobs yet. Queue a file or URL with the form on the right.")
        self.table.on_click(g(self._row_clicked))
        self.selection_label = W.HTML()
        self.action_buttons: dict[str, W.Button] = {}
        styles = {"apply": "primary", "release": "", "retry": "", "cancel": "danger"}
        for action in ACTIONS:
            b = W.Button(description=action.capitalize(), button_style=styles[action], layout=W.Layout(width="auto"))
            b.add_class(f"cvn-queue-{action}")
            b.on_click(g(lambda _b, a=action: self.run_action(a)))
            self.action_buttons[action] = b
        self.select_all_button = W.Button(description="Select shown", layout=W.Layout(width="auto"))
        self.select_all_button.on_click(g(lambda _b: self._select_shown()))
        actions = W.HBox([self.selection_label, self.select_all_button, *self.action_buttons.values()])
        actions.add_class("cvn-toolbar")
        self.results = W.HTML()
        self.results.add_class("cvn-queue-results")
        main = W.VBox([filters, self.table, actions, self.results], layout=W.Layout(grid_gap="8px"))
        main.add_class("cvn-main")

        # enqueue form
        self.mode = W.ToggleButtons(options=[("Local file", "local"), ("Remote URL", "remote")], value="local",
                                    style={"button_width": "auto"})
        self.source_path = W.Text(placeholder="incoming/picture.png (relative to the workspace) or /abs/path")
        self.remote_url = W.Text(placeholder="https://civitai.com/models/… or https://huggingface.co/…")
        self.provider = W.Dropdown(options=[("auto (from the URL)", "auto"), ("local", "local")] +
                                   [(p, p) for p in REMOTE_PROVIDERS], value="auto")
        self.terms = W.Checkbox(description="I accept the provider's terms and the asset's licence", indent=False)
        self.type_hint = W.Combobox(placeholder="e.g. backgrounds", options=TYPE_HINTS, ensure_option=False)
        self.dest_relative = W.Text(placeholder="optional, e.g. backgrounds/school/")
        self.pin = W.Checkbox(description="Pin (keep the staged file until applied or released)", indent=False)
        self.enqueue_button = W.Button(description="Enqueue", button_style="primary", layout=W.Layout(width="100%"))
        self.field_errors = {k: W.HTML() for k in ("mode", "source_path", "remote_url", "provider",
                                                   "terms_acknowledged", "asset_type_hint", "dest_relative")}
        for k, w in self.field_errors.items():
            w.add_class("cvn-field-error")
            w.add_class(f"cvn-error-{k}")
        for w, cls in ((self.mode, "mode"), (self.source_path, "source"), (self.remote_url, "url"),
                       (self.provider, "provider"), (self.terms, "terms"), (self.type_hint, "type"),
                       (self.dest_relative, "dest"), (self.enqueue_button, "submit")):
            w.add_class(f"cvn-enqueue-{cls}")
            if isinstance(w, W.Text | W.Combobox | W.Dropdown):
                w.layout.width = "auto"
        self.local_box = _field("File path", self.source_path, self.field_errors["source_path"],
                                "Files outside ingest.allowed_source_roots are refused.")
        self.remote_box = W.VBox([_field("URL", self.remote_url, self.field_errors["remote_url"]),
                                  W.VBox([self.terms, self.field_errors["terms_acknowledged"]])])
        self.mode.observe(lambda ch: self._mode_changed(ch["new"]), "value")
        self.enqueue_button.on_click(g(lambda _b: self.submit()))
        form = W.VBox([theme.section("Enqueue"), self.mode, self.field_errors["mode"], self.local_box, self.remote_box,
                       _field("Provider", self.provider, self.field_errors["provider"]),
                       _field("Type hint", self.type_hint, self.field_errors["asset_type_hint"]),
                       _field("Destination", self.dest_relative, self.field_errors["dest_relative"]),
                       self.pin, self.enqueue_button])
        form.add_class("cvn-card")
        self.job_detail = W.HTML(self._job_html(None))
        detail = W.VBox([theme.section("Job"), self.job_detail])
        detail.add_class("cvn-card")
        side = W.VBox([form, detail], layout=W.Layout(grid_gap="10px"))
        side.add_class("cvn-side")
        self._mode_changed("local")
        body = W.HBox([main, side], layout=W.Layout(grid_gap="14px", align_items="flex-start", margin="6px 0 0 0"))
        self.widget = theme.root_box([W.HTML(f"<style>{_CSS}</style>", layout=W.Layout(height="0px")),
                                      self.header, self.flags, self.counts, body, self.status.widget], "cvn-queue")

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _mode_changed(self, mode: str) -> None:
        self.local_box.layout.display = "" if mode == "local" else "none"
        self.remote_box.layout.display = "" if mode == "remote" else "none"

    @staticmethod
    def _job_html(job: dict | None) -> str:
        if job is None:
            return '<div class="cvn-empty">Click a job to see its notes, errors and metadata.</div>'
        keys = ("job_id", "status", "provider", "source_path", "remote_url", "digest", "bytes", "asset_uid",
                "existing_uid", "dedup_of", "notes", "error", "errors", "attempts", "metadata")
        empty = (None, [], {}, "")
        shown = {k: job.get(k) for k in keys if job.get(k) not in empty}
        if isinstance(shown.get("metadata"), dict):  # the normalised metadata lists every field, mostly empty
            shown["metadata"] = {k: v for k, v in shown["metadata"].items() if v not in empty} or None
        return theme.json_html({k: v for k, v in shown.items() if v is not None})

    # -- rendering -------------------------------------------------------------------------
    def render(self) -> None:
        m = self.model
        with m.lock:
            counts = m.summary.get("counts", {})
            active = m.status
            self.counts.value = "".join(
                f'<div class="cvn-stat tone-{STATUS_TONES.get(s) or "plain"}{" active" if s == active else ""}'
                f'{" zero" if not counts.get(s) else ""}"><span class="v">{counts.get(s, 0):,}</span>'
                f'<span class="l">{s}</span></div>' for s in STATUSES)
            flags = m.flags()
            ingest_chip = (chip("HTTP ingest routes: enabled", "ok") if flags["enable_asset_ingest"]
                           else chip("HTTP ingest routes: disabled (features.enable_asset_ingest)", "warn"))
            terms_chip = chip("remote pulls need terms acknowledgement" if flags["require_remote_terms_ack"]
                              else "terms acknowledgement not required", "accent")
            worker = m.summary.get("worker_running")
            self.flags.value = (f'<div style="margin-bottom:6px">{ingest_chip}{terms_chip}'
                                f'{chip("downloader running in this kernel" if worker else "downloader idle")}</div>')
            self.table.rows = [m.row(j) for j in m.jobs]
            self.table.selected = m.selection.on(m.job_ids)
            self.table.focused = m.selection.focused or ""
            n = len(m.selection)
            self.selection_label.value = f'<span class="cvn-selbar"><b>{n}</b> selected</span>'
            allowed = m.allowed_actions()
            for action, button in self.action_buttons.items():
                k = allowed[action]
                button.disabled = k == 0
                button.description = f"{action.capitalize()} ({k})" if k else action.capitalize()
            self.job_detail.value = self._job_html(m.focused_job())
            total = m.summary.get("total", 0)
            shown = len(m.jobs)
            live = self.updater is not None and self.updater.running
            theme.set_header(self.header, "Ingest queue",
                             f"{total:,} jobs" + (f" · {shown:,} shown" if shown != total else ""), live=live)

    def _results_html(self) -> str:
        rows = "".join(f'<div class="r {"ok" if o.ok else "bad"}"><span class="cvn-mono">{esc(o.job_id)}</span> '
                       f'{esc(o.message)}</div>' for o in self.model.last_results)
        return f'<div class="cvn-card cvn-results"><div class="cvn-section">Last action</div>{rows}</div>' if rows else ""

    # -- callbacks -------------------------------------------------------------------------
    def refresh(self) -> None:
        with self.model.lock:
            self.model.load()
            self.render()

    def _filter(self) -> None:
        with self.model.lock:
            self.model.set_filter(status=self.status_filter.value or None, provider=self.provider_filter.value or None)
            self.render()

    def _row_clicked(self, job_id: str, shift: bool, toggle: bool) -> None:
        with self.model.lock:
            self.model.click(job_id, shift=shift, toggle=toggle)
            self.render()

    def _select_shown(self) -> None:
        with self.model.lock:
            self.model.selection.select_many(self.model.job_ids)
            self.render()

    def run_action(self, action: str) -> None:
        outcomes = self.model.run_action(action)
        self.results.value = self._results_html()
        self.render()
        good = sum(o.ok for o in outcomes)
        if good == len(outcomes):
            self.status.ok(f"{action.capitalize()}: {good} of {len(outcomes)} job{'s' if len(outcomes) != 1 else ''} done.")
        else:
            self.status.warn(f"{action.capitalize()}: {good} of {len(outcomes)} done; see the reasons below the table.")

    def form(self) -> EnqueueForm:
        return EnqueueForm(mode=self.mode.value, source_path=self.source_path.value, remote_url=self.remote_url.value,
                           provider=self.provider.value, terms_acknowledged=self.terms.value,
                           asset_type_hint=self.type_hint.value, dest_relative=self.dest_relative.value,
                           pin=self.pin.value)

    def submit(self) -> dict | None:
        """Validate the form and enqueue; field problems appear under their fields."""
        for w in self.field_errors.values():
            w.value = ""
        try:
            job = self.model.enqueue(self.form())
        except FormError as exc:
            for key, message in exc.errors.items():
                self.field_errors[key].value = esc(message)
            self.status.error(f"Please fix {len(exc.errors)} field{'s' if len(exc.errors) != 1 else ''} "
                              "in the form.")
            return None
        self.render()
        extra = {"duplicate": " (a duplicate: these bytes are already staged or registered)",
                 "queued": " (the downloader pulls it next)"}.get(job["status"], "")
        self.status.ok(f"Queued job {job['job_id']}: {job['status']}{extra}.")
        if job["status"] in ("staged", "duplicate"):
            self.source_path.value = ""
        return job

    # -- live ------------------------------------------------------------------------------
    def start_live(self) -> None:
        if self.updater is not None and self.updater.running:
            return
        from comfyvn.hooks import get_hook_bus

        self.updater = LiveUpdater(self.queue.db, self._on_live, topics=INGEST_TOPICS, debounce=0.1,
                                   tick=self._tick, tick_interval=2.0, on_error=self._live_error,
                                   name="comfyvn-queue-live")
        self.updater.start(after_id=get_hook_bus(self.queue.db).last_id())
        self.refresh()

    def _on_live(self, _batch: list[dict]) -> None:
        self.refresh()

    def _tick(self) -> None:  # flags and the worker state change without events
        with self.model.lock:
            self.render()

    def _live_error(self, exc: BaseException) -> None:
        self.status.error(exc, "Live update failed:")
