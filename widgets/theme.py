"""Shared look of the dashboards: one stylesheet, status bars, chips and readable errors.

Every dashboard puts :func:`stylesheet` first in its tree; widgets get ``cvn-*`` classes.
Nothing depends on icon fonts (Voila's Font Awesome comes from a CDN that may be offline):
meaning is carried by words and plain Unicode marks.
"""

from __future__ import annotations

import functools
import html
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from comfyvn.errors import ComfyvnError, RateLimited

log = logging.getLogger("comfyvn.widgets")

ACCENT = "#4f46e5"

CSS = """
.cvn-root { font-family: Inter, "Segoe UI", system-ui, -apple-system, "Helvetica Neue", Arial, sans-serif;
  color: #1f2937; font-size: 13px; line-height: 1.45; --cvn-accent: #4f46e5; --cvn-accent-soft: #eef2ff;
  --cvn-border: #e5e7eb; --cvn-muted: #6b7280; --cvn-bg: #f9fafb; max-width: 1400px; }
.cvn-root .widget-label, .cvn-root .widget-html-content { font-family: inherit; }
.cvn-root .widget-html-content { white-space: normal; line-height: 1.45; min-width: 0; }
.cvn-root .widget-html { min-width: 0; }
.cvn-header { display: flex; align-items: baseline; gap: 12px; padding: 4px 2px 10px 2px;
  border-bottom: 1px solid var(--cvn-border); margin-bottom: 10px; }
.cvn-title { font-size: 20px; font-weight: 650; letter-spacing: -0.01em; color: #111827; }
.cvn-subtitle { color: var(--cvn-muted); font-size: 13px; }
.cvn-live { font-size: 12px; color: #047857; background: #ecfdf5; border: 1px solid #a7f3d0;
  border-radius: 999px; padding: 1px 9px; }
.cvn-live.off { color: var(--cvn-muted); background: #f3f4f6; border-color: var(--cvn-border); }
.cvn-card { background: #fff; border: 1px solid var(--cvn-border); border-radius: 10px; padding: 10px 12px; }
.cvn-section { font-size: 11px; font-weight: 650; text-transform: uppercase; letter-spacing: .06em;
  color: var(--cvn-muted); margin: 4px 0 6px 0; }
.cvn-toolbar { gap: 6px; align-items: center; flex-wrap: wrap; }
.cvn-root .jupyter-button { border-radius: 6px; font-family: inherit; }
.cvn-root .jupyter-button.mod-primary { background: var(--cvn-accent); }
.cvn-root .widget-text input, .cvn-root .widget-dropdown select, .cvn-root textarea { border-radius: 6px; }
.cvn-muted { color: var(--cvn-muted); }
.cvn-mono { font-family: "JetBrains Mono", "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px; }
.cvn-chip { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 11.5px; line-height: 19px;
  background: #f3f4f6; color: #374151; border: 1px solid var(--cvn-border); margin: 0 4px 3px 0;
  white-space: nowrap; }
.cvn-chip.accent { background: var(--cvn-accent-soft); color: #3730a3; border-color: #c7d2fe; }
.cvn-chip.ok { background: #ecfdf5; color: #065f46; border-color: #a7f3d0; }
.cvn-chip.warn { background: #fffbeb; color: #92400e; border-color: #fde68a; }
.cvn-chip.bad { background: #fef2f2; color: #991b1b; border-color: #fecaca; }
.cvn-status { min-height: 30px; }
.cvn-msg { border-radius: 8px; padding: 6px 10px; font-size: 13px; border: 1px solid transparent; }
.cvn-msg.info { background: #f0f9ff; color: #075985; border-color: #bae6fd; }
.cvn-msg.ok { background: #ecfdf5; color: #065f46; border-color: #a7f3d0; }
.cvn-msg.warn { background: #fffbeb; color: #92400e; border-color: #fde68a; }
.cvn-msg.error { background: #fef2f2; color: #991b1b; border-color: #fecaca; }
.cvn-msg b { font-weight: 650; }
.cvn-kv { border-collapse: collapse; width: 100%; font-size: 12.5px; }
.cvn-kv th { text-align: left; color: var(--cvn-muted); font-weight: 500; padding: 2px 10px 2px 0;
  vertical-align: top; white-space: nowrap; width: 1%; }
.cvn-kv td { padding: 2px 0; word-break: break-all; }
.cvn-pre { background: #0f172a; color: #e2e8f0; border-radius: 8px; padding: 10px 12px; overflow: auto;
  max-height: 360px; font-family: "JetBrains Mono", "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: 11.5px; line-height: 1.5; white-space: pre; margin: 4px 0; }
.cvn-pre .k { color: #93c5fd; } .cvn-pre .s { color: #86efac; } .cvn-pre .n { color: #fcd34d; }
.cvn-pre .b { color: #f9a8d4; }
.cvn-empty { color: var(--cvn-muted); padding: 18px; text-align: center; border: 1px dashed var(--cvn-border);
  border-radius: 10px; background: var(--cvn-bg); }
.cvn-stat { display: inline-flex; flex-direction: column; min-width: 84px; padding: 5px 12px; margin: 0 6px 6px 0;
  border: 1px solid var(--cvn-border); border-radius: 10px; background: #fff; }
.cvn-stat .v { font-size: 18px; font-weight: 650; color: #111827; font-variant-numeric: tabular-nums; }
.cvn-stat .l { font-size: 11px; color: var(--cvn-muted); text-transform: uppercase; letter-spacing: .05em; }
.cvn-bars { display: grid; grid-template-columns: max-content 1fr max-content; gap: 5px 10px; align-items: center;
  font-size: 12.5px; }
.cvn-bar { height: 12px; border-radius: 6px; background: var(--cvn-accent); min-width: 3px; }
.cvn-bar-track { background: #f3f4f6; border-radius: 6px; }
.cvn-form-label { font-size: 12px; color: #374151; font-weight: 550; margin-bottom: 2px; }
.cvn-field-error { color: #b91c1c; font-size: 12px; min-height: 0; }
.cvn-root .cvn-tab.jupyter-widget-tab > .lm-TabBar { min-height: 36px; }
.cvn-root .cvn-tab.jupyter-widget-tab > .lm-TabBar .lm-TabBar-tab { font-family: inherit; font-size: 13px;
  padding: 7px 18px; min-width: 150px; min-height: 36px; background: #f3f4f6; color: #4b5563;
  border-color: var(--cvn-border); border-radius: 8px 8px 0 0; margin-right: 4px; }
.cvn-root .cvn-tab.jupyter-widget-tab > .lm-TabBar .lm-TabBar-tab.lm-mod-current { background: #fff; color: #111827;
  font-weight: 600; box-shadow: inset 0 2px 0 var(--cvn-accent); }
.cvn-root .cvn-tab.jupyter-widget-tab > .widget-tab-contents { border-color: var(--cvn-border);
  border-radius: 0 10px 10px 10px; padding: 14px 16px; }
.cvn-stat.tone-ok .v { color: #047857; } .cvn-stat.tone-bad .v { color: #b91c1c; }
.cvn-stat.tone-warn .v { color: #b45309; } .cvn-stat.tone-accent .v { color: #4338ca; }
.cvn-stat.tone-info .v { color: #0369a1; } .cvn-stat.zero .v { color: #d1d5db; }
"""


def stylesheet() -> W.HTML:
    """The dashboards' stylesheet as a hidden widget (a <style> applies wherever it sits)."""
    out = W.HTML(f"<style>{CSS}</style>", layout=W.Layout(height="0px", overflow="hidden", margin="0"))
    out.add_class("cvn-style")
    return out


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def chip(text: Any, kind: str = "") -> str:
    return f'<span class="cvn-chip {kind}">{esc(text)}</span>'


def header(title: str, subtitle: str = "") -> W.HTML:
    out = W.HTML(_header_html(title, subtitle, None))
    out.add_class("cvn-header-w")
    return out


def _header_html(title: str, subtitle: str, live: bool | None) -> str:
    live_html = ""
    if live is not None:
        live_html = ('<span class="cvn-live">&#9679; live</span>' if live
                     else '<span class="cvn-live off">&#9675; not live</span>')
    return (f'<div class="cvn-header"><span class="cvn-title">{esc(title)}</span>'
            f'<span class="cvn-subtitle">{esc(subtitle)}</span>{live_html}</div>')


def set_header(widget: W.HTML, title: str, subtitle: str = "", live: bool | None = None) -> None:
    widget.value = _header_html(title, subtitle, live)


def section(title: str) -> W.HTML:
    return W.HTML(f'<div class="cvn-section">{esc(title)}</div>')


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "?"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def json_html(value: Any) -> str:
    """Pretty JSON with light syntax colouring, HTML-escaped (for the payload/sidecar viewers)."""
    import json
    import re

    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    token = re.compile(r'("(?:[^"\\]|\\.)*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)')

    def paint(m: re.Match) -> str:
        if m.group(1):
            cls = "k" if m.group(2) else "s"
            return f'<span class="{cls}">{esc(m.group(1))}</span>{m.group(2) or ""}'
        if m.group(3):
            return f'<span class="b">{m.group(3)}</span>'
        return f'<span class="n">{m.group(4)}</span>'

    out, pos = [], 0
    for m in token.finditer(text):
        out.append(esc(text[pos:m.start()]))
        out.append(paint(m))
        pos = m.end()
    out.append(esc(text[pos:]))
    return f'<div class="cvn-pre">{"".join(out)}</div>'


# ---------------------------------------------------------------------------------------- errors
_EXPECTED = (ValueError, KeyError, LookupError, FileNotFoundError, PermissionError, OSError, sqlite3.Error,
             TimeoutError)


def friendly_error(exc: BaseException) -> str:
    """A one-line message a person can act on (never a traceback).

    Core errors (:class:`~comfyvn.errors.ComfyvnError`) and bad input carry readable messages
    already; anything else is logged with its traceback to ``logs/server.log`` and summarised.
    """
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and message.startswith("'") and message.endswith("'"):
        message = message[1:-1]
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return f"{message} (try again in {exc.retry_after:.1f} s)"
    if isinstance(exc, (ComfyvnError, *_EXPECTED)):
        if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in message:
            message = f"{message}: {exc.filename}"
        return message
    log.error("unexpected error in a dashboard", exc_info=exc)
    return f"Unexpected {type(exc).__name__}: {message}. The details were written to logs/server.log."


class StatusBar:
    """A one-line message area: ``info``, ``ok``, ``warn`` and ``error`` (from a message or exception)."""

    def __init__(self) -> None:
        self.widget = W.HTML("")
        self.widget.add_class("cvn-status")
        self.kind = ""
        self.text = ""

    def show(self, kind: str, message: str) -> None:
        self.kind, self.text = kind, message
        self.widget.value = f'<div class="cvn-msg {kind}">{message}</div>' if message else ""

    def info(self, message: str) -> None:
        self.show("info", esc(message))

    def ok(self, message: str) -> None:
        self.show("ok", esc(message))

    def warn(self, message: str) -> None:
        self.show("warn", esc(message))

    def error(self, error: BaseException | str, prefix: str = "") -> None:
        text = error if isinstance(error, str) else friendly_error(error)
        lead = f"<b>{esc(prefix)}</b> " if prefix else ""
        self.show("error", lead + esc(text))

    def clear(self) -> None:
        self.show("", "")


def guarded(status: StatusBar, prefix: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a widget callback so any exception becomes a readable message in ``status``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # shown to the person, logged when unexpected
                status.error(exc, prefix)
                return None

        return inner

    return wrap


def error_panel(title: str, exc: BaseException | str) -> W.HTML:
    """A full-width readable error (used when a dashboard cannot start, e.g. a broken config)."""
    text = exc if isinstance(exc, str) else friendly_error(exc)
    box = W.HTML(f'<div class="cvn-msg error"><b>{esc(title)}</b><br>{esc(text)}</div>')
    return box


def root_box(children: list[W.Widget], cls: str) -> W.VBox:
    box = W.VBox([stylesheet(), *children])
    box.add_class("cvn-root")
    box.add_class(cls)
    return box
