"""The thumbnail grid: a small anywidget (one DOM grid, keyed tiles, real Shift/Ctrl clicks).

Python sets ``tiles`` (what each tile says), ``thumbs`` (data URIs of the visible page only),
``status`` (ready/pending/failed/none per uid), ``selected`` (selected uids on this page) and
``focused``.  The browser sends ``{"kind": "click", "uid", "shift", "toggle"}`` messages.
Tiles are reconciled by uid, so a live refresh never rebuilds the grid or loses the scroll.
"""

from __future__ import annotations

import anywidget
import traitlets as t

from .clicks import ClickSource

_ESM = r"""
function el(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}
function human(n) {
  if (n == null) return "";
  const u = ["B", "KB", "MB", "GB"]; let i = 0; let v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v.toFixed(0)) + " " + u[i];
}
export default {
  render({ model, el: root }) {
    const grid = el("div", "cvn-grid");
    const empty = el("div", "cvn-grid-empty");
    root.append(grid, empty);
    const nodes = new Map();

    function makeTile(uid) {
      const tile = el("div", "cvn-tile");
      tile.dataset.uid = uid;
      tile.tabIndex = 0;
      const thumb = el("div", "cvn-thumb");
      const img = el("img");
      img.alt = "";
      img.draggable = false;
      const ph = el("div", "cvn-ph");
      const check = el("span", "cvn-check", "\u2713");
      check.title = "Add to / remove from the selection";
      const badge = el("span", "cvn-badge");
      thumb.append(img, ph, check, badge);
      const cap = el("div", "cvn-cap");
      const name = el("div", "cvn-name");
      const meta = el("div", "cvn-meta");
      const tags = el("div", "cvn-tags");
      cap.append(name, meta, tags);
      tile.append(thumb, cap);
      tile.addEventListener("click", (e) => {
        const toggle = e.ctrlKey || e.metaKey || e.target === check;
        model.send({ kind: "click", uid, shift: e.shiftKey, toggle });
      });
      tile.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          model.send({ kind: "click", uid, shift: e.shiftKey, toggle: e.key === " " });
        }
      });
      tile.addEventListener("mousedown", (e) => { if (e.shiftKey) e.preventDefault(); });
      return { tile, img, ph, name, meta, tags, badge };
    }

    function paint() {
      const tiles = model.get("tiles") || [];
      const thumbs = model.get("thumbs") || {};
      const status = model.get("status") || {};
      const selected = new Set(model.get("selected") || []);
      const focused = model.get("focused");
      root.style.setProperty("--cvn-tile", (model.get("tile_size") || 150) + "px");
      const keep = new Set();
      for (const t of tiles) {
        keep.add(t.uid);
        let n = nodes.get(t.uid);
        if (!n) { n = makeTile(t.uid); nodes.set(t.uid, n); }
        n.tile.title = t.name;
        n.name.textContent = t.title;
        n.meta.textContent = t.type + " \u00b7 " + (t.license || "no licence") + " \u00b7 " + human(t.bytes);
        const tagKey = JSON.stringify(t.tags || []);
        if (n.tags.dataset.v !== tagKey) {
          n.tags.dataset.v = tagKey;
          // whole chips while they fit the tile (about 150 px at 11 px type), then "+N" for the rest
          const all = t.tags || [];
          const chipWidth = (x) => 6.2 * x.length + 18;
          let used = 0, count = 0;
          for (const x of all) {
            const reserve = count + 1 < all.length ? 34 : 0;
            if (count > 0 && used + chipWidth(x) + reserve > 150) break;
            used += chipWidth(x);
            count += 1;
          }
          const shown = all.slice(0, count).map((x) => el("span", "cvn-tag", x));
          if (all.length > count) shown.push(el("span", "cvn-tag cvn-tag-more", "+" + (all.length - count)));
          n.tags.replaceChildren(...shown);
          n.tags.title = all.join(", ");
        }
        n.badge.textContent = t.ext;
        const uri = thumbs[t.uid];
        const st = status[t.uid] || (uri ? "ready" : "none");
        n.tile.dataset.status = st;
        if (uri) {
          if (n.img.getAttribute("src") !== uri) n.img.src = uri;
          n.img.style.display = "";
          n.ph.style.display = "none";
        } else {
          n.img.removeAttribute("src");
          n.img.style.display = "none";
          n.ph.style.display = "";
          n.ph.textContent = st === "pending" ? "rendering preview\u2026" : st === "failed" ? "preview failed" : t.ext;
          n.ph.className = "cvn-ph " + st;
        }
        n.tile.classList.toggle("selected", selected.has(t.uid));
        n.tile.classList.toggle("focused", focused === t.uid);
        n.tile.setAttribute("aria-selected", selected.has(t.uid) ? "true" : "false");
      }
      for (const [uid, n] of nodes) {
        if (!keep.has(uid)) { n.tile.remove(); nodes.delete(uid); }
      }
      // order the DOM like the page (moving nodes keeps them and their loaded images)
      let prev = null;
      for (const t of tiles) {
        const node = nodes.get(t.uid).tile;
        const want = prev ? prev.nextSibling : grid.firstChild;
        if (want !== node) grid.insertBefore(node, want);
        prev = node;
      }
      empty.textContent = model.get("empty_text") || "";
      empty.style.display = tiles.length ? "none" : "";
    }
    for (const name of ["tiles", "thumbs", "status", "selected", "focused", "tile_size", "empty_text"]) {
      model.on("change:" + name, paint);
    }
    paint();
  },
};
"""

_CSS = r"""
.cvn-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--cvn-tile, 150px), 1fr));
  gap: 12px; padding: 2px; }
.cvn-grid-empty { color: #6b7280; padding: 40px 16px; text-align: center; border: 1px dashed #e5e7eb;
  border-radius: 10px; background: #f9fafb; font-size: 13px; }
.cvn-tile { position: relative; border: 1px solid #e5e7eb; border-radius: 10px; background: #fff; cursor: pointer;
  overflow: hidden; user-select: none; transition: box-shadow .12s, border-color .12s, transform .12s;
  outline: none; }
.cvn-tile:hover { box-shadow: 0 4px 14px rgba(15, 23, 42, .10); transform: translateY(-1px); }
.cvn-tile:focus-visible { box-shadow: 0 0 0 3px #c7d2fe; }
.cvn-tile.selected { border-color: #4f46e5; box-shadow: 0 0 0 2px #4f46e5; }
.cvn-tile.focused:not(.selected) { border-color: #a5b4fc; }
.cvn-thumb { position: relative; aspect-ratio: 1 / 1; display: flex; align-items: center; justify-content: center;
  background-color: #f8f9fa;
  background-image: linear-gradient(45deg, #eceef1 25%, transparent 25%), linear-gradient(-45deg, #eceef1 25%, transparent 25%),
    linear-gradient(45deg, transparent 75%, #eceef1 75%), linear-gradient(-45deg, transparent 75%, #eceef1 75%);
  background-size: 16px 16px; background-position: 0 0, 0 8px, 8px -8px, -8px 0; }
.cvn-thumb img { max-width: 100%; max-height: 100%; object-fit: contain; display: block; }
.cvn-ph { font: 600 13px/1.3 system-ui, sans-serif; color: #6b7280; text-align: center; padding: 8px;
  letter-spacing: .04em; }
.cvn-ph.none { font-size: 20px; color: #4338ca; background: #eef2ff; border-radius: 8px; padding: 14px 16px; }
.cvn-ph.pending { background: linear-gradient(90deg, #f3f4f6 0%, #e5e7eb 50%, #f3f4f6 100%);
  background-size: 200% 100%; animation: cvn-shimmer 1.2s infinite linear; width: 100%; height: 100%;
  display: flex; align-items: center; justify-content: center; font-weight: 500; }
.cvn-ph.failed { color: #b91c1c; }
@keyframes cvn-shimmer { from { background-position: 200% 0; } to { background-position: -200% 0; } }
.cvn-check { position: absolute; top: 6px; left: 6px; width: 20px; height: 20px; border-radius: 6px;
  border: 1.5px solid #9ca3af; background: rgba(255, 255, 255, .9); color: transparent; font: 700 13px/18px sans-serif;
  text-align: center; opacity: 0; transition: opacity .12s; }
.cvn-tile:hover .cvn-check, .cvn-tile.selected .cvn-check { opacity: 1; }
.cvn-tile.selected .cvn-check { background: #4f46e5; border-color: #4f46e5; color: #fff; }
.cvn-badge { position: absolute; top: 6px; right: 6px; font: 600 10px/16px system-ui, sans-serif; color: #374151;
  background: rgba(255, 255, 255, .88); border-radius: 5px; padding: 0 5px; letter-spacing: .04em; }
.cvn-cap { padding: 7px 9px 8px 9px; border-top: 1px solid #f3f4f6; }
.cvn-name { font: 600 12.5px/1.3 system-ui, sans-serif; color: #111827; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.cvn-meta { font: 11.5px/1.4 system-ui, sans-serif; color: #6b7280; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.cvn-tags { margin-top: 3px; height: 18px; overflow: hidden; white-space: nowrap; display: flex; }
.cvn-tag { display: inline-block; font: 11px/16px system-ui, sans-serif; color: #3730a3; background: #eef2ff;
  border-radius: 999px; padding: 0 7px; margin-right: 4px; flex: 0 0 auto; overflow: hidden;
  text-overflow: ellipsis; }
.cvn-tag:first-child { flex: 0 1 auto; min-width: 0; }
.cvn-tag-more { flex: 0 0 auto; color: #4b5563; background: #f3f4f6; }
"""


class ThumbGrid(ClickSource, anywidget.AnyWidget):
    _click_key = "uid"
    _esm = _ESM
    _css = _CSS
    tiles = t.List(t.Dict()).tag(sync=True)
    thumbs = t.Dict().tag(sync=True)
    status = t.Dict().tag(sync=True)
    selected = t.List(t.Unicode()).tag(sync=True)
    focused = t.Unicode("").tag(sync=True)
    tile_size = t.Int(168).tag(sync=True)
    empty_text = t.Unicode("No assets match.").tag(sync=True)

