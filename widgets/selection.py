"""Multi-selection semantics shared by the gallery grid and the job/event tables (no widgets here).

* plain click: select only that item (it becomes the anchor);
* toggle click (Ctrl/Cmd, or the tile's check mark): add or remove one item;
* shift click: add the range from the anchor to the clicked item, in the order shown;
* ``select_many`` (select page / select all matching), ``deselect_many``, ``clear``;
* ``retain`` drops items that no longer exist (removed by another process).

The selection keeps insertion order (exports list assets in the order they were picked) and
survives paging and live refreshes: it is a set of ids, not of positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class SelectionModel:
    def __init__(self) -> None:
        self._selected: dict[str, None] = {}
        self.anchor: str | None = None
        self.focused: str | None = None

    # -- reading --------------------------------------------------------------------------
    @property
    def selected(self) -> list[str]:
        return list(self._selected)

    def __contains__(self, item: object) -> bool:
        return item in self._selected

    def __len__(self) -> int:
        return len(self._selected)

    def on(self, order: Sequence[str]) -> list[str]:
        """The selected ids among ``order`` (e.g. the current page), in that order."""
        return [i for i in order if i in self._selected]

    # -- changing -------------------------------------------------------------------------
    def click(self, item: str, order: Sequence[str], *, shift: bool = False, toggle: bool = False) -> None:
        """Apply one click on ``item`` shown among ``order``."""
        if shift and self.anchor is not None and self.anchor in order and item in order:
            i, j = order.index(self.anchor), order.index(item)
            lo, hi = min(i, j), max(i, j)
            for other in order[lo:hi + 1]:
                self._selected[other] = None
        elif toggle or shift:  # shift without a visible anchor behaves like a toggle
            if item in self._selected:
                del self._selected[item]
            else:
                self._selected[item] = None
            self.anchor = item
        else:
            self._selected = {item: None}
            self.anchor = item
        self.focused = item

    def select_many(self, items: Iterable[str]) -> int:
        """Add ``items``; returns how many were newly selected."""
        before = len(self._selected)
        for item in items:
            self._selected[item] = None
        return len(self._selected) - before

    def deselect_many(self, items: Iterable[str]) -> int:
        removed = 0
        for item in items:
            if self._selected.pop(item, 0) is None:
                removed += 1
        return removed

    def set(self, items: Iterable[str]) -> None:
        self._selected = dict.fromkeys(items)

    def clear(self) -> None:
        self._selected = {}
        self.anchor = None

    def retain(self, existing: Iterable[str]) -> list[str]:
        """Keep only ids in ``existing``; returns the ids dropped."""
        keep = set(existing)
        dropped = [i for i in self._selected if i not in keep]
        for item in dropped:
            del self._selected[item]
        if self.anchor in dropped:
            self.anchor = None
        if self.focused in dropped:
            self.focused = None
        return dropped
