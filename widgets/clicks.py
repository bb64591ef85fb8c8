"""Python side of the click messages our anywidget front ends send.

The browser sends ``{"kind": "click", <key>: item_id, "shift": bool, "toggle": bool}``;
handlers registered with :meth:`ClickSource.on_click` get ``(item_id, shift, toggle)``.
"""

from __future__ import annotations

from collections.abc import Callable

ClickHandler = Callable[[str, bool, bool], None]


class ClickSource:
    """Mixin for an ``anywidget.AnyWidget`` (put it first in the bases)."""

    _click_key = "id"  # the message field naming the clicked item

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._click_handlers: list[ClickHandler] = []
        self.on_msg(self._on_click_msg)

    def on_click(self, callback: ClickHandler) -> None:
        """``callback(item_id, shift, toggle)`` for every click in the browser."""
        self._click_handlers.append(callback)

    def click(self, item_id: str, *, shift: bool = False, toggle: bool = False) -> None:
        """Simulate a click from Python (tests, keyboard shortcuts)."""
        for cb in list(self._click_handlers):
            cb(item_id, shift, toggle)

    def _on_click_msg(self, _widget, content: dict, _buffers) -> None:
        if isinstance(content, dict) and content.get("kind") == "click" and isinstance(content.get(self._click_key), str):
            self.click(content[self._click_key], shift=bool(content.get("shift")), toggle=bool(content.get("toggle")))
