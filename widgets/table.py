"""A compact data table (anywidget) for the job list and the event stream.

``columns``: ``[{"key", "label", "kind", "width"?}]`` with kind ``text``, ``mono``, ``chip``
(cell value ``[text, tone]``, tone one of ok/warn/bad/accent/""), or ``progress`` (cell value
``[fraction or null, label]``).  ``rows``: ``[{"id": str, "cells": {key: value}}]``.
Rows are keyed by id, so prepending streamed rows keeps the scroll position and the DOM.
Clicks send ``{"kind": "click", "id", "shift", "toggle"}``; selection is owned by Python.
"""

from __future__ import annotations

import anywidget
import traitlets as t

from .clicks import ClickSource

_ESM = r"""
function mk(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined && text !== null) n.textContent = text;
  return n;
}
function fillCell(td, col, v) {
  td.replaceChildren();
  if (col.kind === "chip") {
    const [text, tone] = Array.isArray(v) ? v : [v, ""];
    if (text !== null && text !== undefined && text !== "") td.append(mk("span", "cvn-tchip " + (tone || ""), text));
  } else if (col.kind === "progress") {
    const [frac, label] = Array.isArray(v) ? v : [null, ""];
    const wrap = mk("div", "cvn-prog");
    const bar = mk("div", "cvn-prog-bar" + (frac === null || frac === undefined ? " indet" : ""));
    if (frac !== null && frac !== undefined) bar.style.width = Math.max(0, Math.min(1, frac)) * 100 + "%";
    const track = mk("div", "cvn-prog-track");
    track.append(bar);
    wrap.append(track, mk("span", "cvn-prog-label", label || ""));
    if (frac !== null && frac !== undefined || label) td.append(wrap);
  } else {
    td.textContent = v === null || v === undefined ? "" : String(v);
    if (col.kind === "mono") td.classList.add("mono");
  }
}
export default {
  render({ model, el }) {
    const box = mk("div", "cvn-table-box");
    const table = mk("table", "cvn-table");
    const thead = mk("thead");
    const tbody = mk("tbody");
    table.append(thead, tbody);
    const empty = mk("div", "cvn-table-empty");
    box.append(table, empty);
    el.append(box);
    const rows = new Map();
    let colKey = "";
    function head() {
      const cols = model.get("columns") || [];
      const key = JSON.stringify(cols);
      if (key === colKey) return;
      colKey = key;
      const tr = mk("tr");
      for (const c of cols) {
        const th = mk("th", null, c.label);
        if (c.width) th.style.width = c.width;
        tr.append(th);
      }
      thead.replaceChildren(tr);
      for (const r of rows.values()) r.tr.remove();
      rows.clear();
    }
    function paint() {
      head();
      box.style.maxHeight = (model.get("max_height") || 420) + "px";
      const cols = model.get("columns") || [];
      const data = model.get("rows") || [];
      const selected = new Set(model.get("selected") || []);
      const focused = model.get("focused");
      const keep = new Set();
      for (const row of data) {
        keep.add(row.id);
        let r = rows.get(row.id);
        if (!r) {
          const tr = mk("tr");
          tr.dataset.id = row.id;
          tr.tabIndex = 0;
          const tds = cols.map(() => mk("td"));
          tr.append(...tds);
          tr.addEventListener("click", (e) => model.send({ kind: "click", id: row.id, shift: e.shiftKey,
            toggle: e.ctrlKey || e.metaKey }));
          tr.addEventListener("keydown", (e) => {
            if (e.key === "Enter" || e.key === " ") {
              e.preventDefault();
              model.send({ kind: "click", id: row.id, shift: e.shiftKey, toggle: e.key === " " });
            }
          });
          tr.addEventListener("mousedown", (e) => { if (e.shiftKey) e.preventDefault(); });
          r = { tr, tds, sig: "" };
          rows.set(row.id, r);
        }
        const sig = JSON.stringify(row.cells);
        if (sig !== r.sig) {
          r.sig = sig;
          cols.forEach((c, i) => fillCell(r.tds[i], c, (row.cells || {})[c.key]));
        }
        r.tr.classList.toggle("selected", selected.has(row.id));
        r.tr.classList.toggle("focused", focused === row.id);
      }
      for (const [id, r] of rows) { if (!keep.has(id)) { r.tr.remove(); rows.delete(id); } }
      let prev = null;
      for (const row of data) {
        const node = rows.get(row.id).tr;
        const want = prev ? prev.nextSibling : tbody.firstChild;
        if (want !== node) tbody.insertBefore(node, want);
        prev = node;
      }
      empty.textContent = model.get("empty_text") || "";
      empty.style.display = data.length ? "none" : "";
    }
    for (const n of ["columns", "rows", "selected", "focused", "empty_text", "max_height"]) model.on("change:" + n, paint);
    paint();
  },
};
"""

_CSS = r"""
.cvn-table-box { overflow: auto; border: 1px solid #e5e7eb; border-radius: 10px; background: #fff; }
.cvn-table { width: 100%; border-collapse: separate; border-spacing: 0; font: 12.5px/1.4 system-ui, sans-serif;
  color: #1f2937; }
.cvn-table thead th { position: sticky; top: 0; background: #f9fafb; text-align: left; font-weight: 600;
  color: #6b7280; font-size: 11px; text-transform: uppercase; letter-spacing: .05em; padding: 7px 10px;
  border-bottom: 1px solid #e5e7eb; z-index: 1; }
.cvn-table td { padding: 6px 10px; border-bottom: 1px solid #f3f4f6; vertical-align: middle; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; max-width: 380px; }
.cvn-table td.mono { font-family: "JetBrains Mono", Menlo, Consolas, monospace; font-size: 11.5px; }
.cvn-table tbody tr { cursor: pointer; user-select: none; outline: none; }
.cvn-table tbody tr:hover td { background: #f9fafb; }
.cvn-table tbody tr.selected td { background: #eef2ff; }
.cvn-table tbody tr.focused td:first-child { box-shadow: inset 3px 0 0 #4f46e5; }
.cvn-table tbody tr:focus-visible td { background: #e0e7ff; }
.cvn-tchip { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 11.5px; line-height: 19px;
  background: #f3f4f6; color: #374151; border: 1px solid #e5e7eb; }
.cvn-tchip.ok { background: #ecfdf5; color: #065f46; border-color: #a7f3d0; }
.cvn-tchip.warn { background: #fffbeb; color: #92400e; border-color: #fde68a; }
.cvn-tchip.bad { background: #fef2f2; color: #991b1b; border-color: #fecaca; }
.cvn-tchip.accent { background: #eef2ff; color: #3730a3; border-color: #c7d2fe; }
.cvn-tchip.info { background: #f0f9ff; color: #075985; border-color: #bae6fd; }
.cvn-prog { display: flex; align-items: center; gap: 8px; min-width: 150px; }
.cvn-prog-track { flex: 1; height: 8px; background: #f3f4f6; border-radius: 4px; overflow: hidden; min-width: 70px; }
.cvn-prog-bar { height: 100%; background: #4f46e5; border-radius: 4px; transition: width .25s; }
.cvn-prog-bar.indet { width: 35%; animation: cvn-indet 1.1s infinite ease-in-out; background: #a5b4fc; }
@keyframes cvn-indet { from { margin-left: -35%; } to { margin-left: 100%; } }
.cvn-prog-label { font-size: 11.5px; color: #6b7280; font-variant-numeric: tabular-nums; }
.cvn-table-empty { color: #6b7280; padding: 28px 16px; text-align: center; font: 13px system-ui, sans-serif; }
"""


class DataTable(ClickSource, anywidget.AnyWidget):
    _click_key = "id"
    _esm = _ESM
    _css = _CSS
    columns = t.List(t.Dict()).tag(sync=True)
    rows = t.List(t.Dict()).tag(sync=True)
    selected = t.List(t.Unicode()).tag(sync=True)
    focused = t.Unicode("").tag(sync=True)
    empty_text = t.Unicode("Nothing to show.").tag(sync=True)
    max_height = t.Int(420).tag(sync=True)

