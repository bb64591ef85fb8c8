"""**Copy Debug JSON**: puts text produced in Python on the browser's clipboard, with a visible fallback.

The button asks Python for the text (``provider()``), Python answers with a custom message and
the browser writes it with ``navigator.clipboard.writeText`` (still inside the click's user
activation window), else with ``document.execCommand("copy")``.  When both are blocked (an
insecure origin, a denied permission) the JSON appears in a selected read-only text area with
a note to press Ctrl+C, so the person is never left without it.  ``on_result(ok, detail)`` tells
the dashboard what happened.
"""

from __future__ import annotations

from collections.abc import Callable

import anywidget
import traitlets as t

_ESM = r"""
export default {
  render({ model, el }) {
    const wrap = document.createElement("div");
    wrap.className = "cvn-clip";
    const btn = document.createElement("button");
    btn.className = "cvn-clip-btn";
    const fb = document.createElement("div");
    fb.className = "cvn-clip-fallback";
    const note = document.createElement("div");
    note.className = "cvn-clip-note";
    const area = document.createElement("textarea");
    area.readOnly = true;
    area.spellcheck = false;
    const close = document.createElement("button");
    close.className = "cvn-clip-close";
    close.textContent = "Hide";
    fb.append(note, area, close);
    wrap.append(btn, fb);
    el.append(wrap);
    const sync = () => {
      btn.textContent = model.get("label");
      btn.disabled = model.get("disabled");
      fb.style.display = model.get("fallback_open") ? "" : "none";
    };
    model.on("change:label", sync);
    model.on("change:disabled", sync);
    model.on("change:fallback_open", sync);
    sync();
    close.addEventListener("click", () => { model.set("fallback_open", false); model.save_changes(); });
    btn.addEventListener("click", () => model.send({ kind: "copy" }));

    function showFallback(text, why) {
      note.textContent = why + " The JSON is selected below: press Ctrl+C (\u2318C on a Mac) to copy it.";
      area.value = text;
      model.set("fallback_open", true);
      model.save_changes();
      fb.style.display = "";
      area.focus();
      area.select();
    }
    function legacyCopy(text) {
      const ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      ta.remove();
      return ok;
    }
    model.on("msg:custom", async (msg) => {
      if (!msg || msg.kind !== "write") return;
      const text = msg.text;
      let ok = false;
      let how = "";
      let why = "";
      if (navigator.clipboard && window.isSecureContext) {
        try { await navigator.clipboard.writeText(text); ok = true; how = "clipboard"; }
        catch (e) { why = String(e && e.message || e); }
      } else {
        why = "The clipboard API is unavailable on this page (it needs https or localhost).";
      }
      if (!ok && legacyCopy(text)) { ok = true; how = "execCommand"; }
      if (!ok) showFallback(text, "The browser blocked clipboard access.");
      model.send({ kind: "result", ok, how, why, id: msg.id });
    });
  },
};
"""

_CSS = r"""
.cvn-clip-btn { font: 500 13px system-ui, sans-serif; padding: 5px 12px; border-radius: 6px; cursor: pointer;
  border: 1px solid #c7d2fe; background: #eef2ff; color: #3730a3; height: 30px; }
.cvn-clip-btn:hover:not(:disabled) { background: #e0e7ff; }
.cvn-clip-btn:disabled { opacity: .5; cursor: default; }
.cvn-clip-fallback { margin-top: 6px; }
.cvn-clip-note { font: 12.5px system-ui, sans-serif; color: #92400e; background: #fffbeb; border: 1px solid #fde68a;
  border-radius: 6px; padding: 5px 8px; margin-bottom: 4px; }
.cvn-clip-fallback textarea { width: 100%; min-width: 320px; height: 160px; font: 11.5px/1.45 Menlo, Consolas, monospace;
  border: 1px solid #d1d5db; border-radius: 6px; padding: 6px; box-sizing: border-box; }
.cvn-clip-close { font: 12px system-ui, sans-serif; margin-top: 2px; border: 1px solid #e5e7eb; background: #fff;
  border-radius: 5px; padding: 2px 10px; cursor: pointer; }
"""


class ClipboardButton(anywidget.AnyWidget):
    _esm = _ESM
    _css = _CSS
    label = t.Unicode("Copy Debug JSON").tag(sync=True)
    disabled = t.Bool(False).tag(sync=True)
    fallback_open = t.Bool(False).tag(sync=True)

    def __init__(self, provider: Callable[[], str], on_result: Callable[[bool, str], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.provider = provider
        self.on_result = on_result
        self.on_error = on_error
        self.last_text: str | None = None
        self._seq = 0
        self.on_msg(self._on_custom_msg)

    def copy(self) -> str | None:
        """Produce the text and send it to the browser (what a click does)."""
        try:
            text = self.provider()
        except Exception as exc:
            if self.on_error:
                self.on_error(exc)
                return None
            raise
        self._seq += 1
        self.last_text = text
        self.send({"kind": "write", "text": text, "id": self._seq})
        return text

    def _on_custom_msg(self, _widget, content: dict, _buffers) -> None:
        if not isinstance(content, dict):
            return
        if content.get("kind") == "copy":
            self.copy()
        elif content.get("kind") == "result" and self.on_result:
            self.on_result(bool(content.get("ok")), str(content.get("how") or content.get("why") or ""))
