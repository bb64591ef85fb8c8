"""Selection semantics shared by the gallery and the tables."""

from __future__ import annotations

from comfyvn_widgets.selection import SelectionModel

ORDER = ["a", "b", "c", "d", "e", "f"]


def test_plain_click_selects_only_that_item():
    s = SelectionModel()
    s.click("b", ORDER)
    s.click("d", ORDER)
    assert s.selected == ["d"]
    assert s.anchor == "d" and s.focused == "d"


def test_shift_click_adds_the_range_from_the_anchor_in_either_direction():
    s = SelectionModel()
    s.click("b", ORDER)
    s.click("e", ORDER, shift=True)
    assert s.selected == ["b", "c", "d", "e"]
    s.click("a", ORDER, toggle=True)  # new anchor
    s.click("a", ORDER, toggle=True)  # and off again
    assert "a" not in s
    s.clear()
    s.click("e", ORDER)
    s.click("c", ORDER, shift=True)
    assert sorted(s.selected) == ["c", "d", "e"]


def test_toggle_click_adds_and_removes_without_touching_others():
    s = SelectionModel()
    s.click("a", ORDER)
    s.click("c", ORDER, toggle=True)
    s.click("f", ORDER, toggle=True)
    assert s.selected == ["a", "c", "f"]
    s.click("c", ORDER, toggle=True)
    assert s.selected == ["a", "f"]


def test_shift_click_without_a_visible_anchor_toggles():
    s = SelectionModel()
    s.click("x", ["x", "y"])  # anchor on another page
    s.click("c", ORDER, shift=True)
    assert s.selected == ["x", "c"]
    assert s.anchor == "c"


def test_select_many_keeps_order_and_counts_new_items():
    s = SelectionModel()
    s.click("c", ORDER)
    assert s.select_many(ORDER[:3]) == 2
    assert s.selected == ["c", "a", "b"]
    assert s.on(ORDER) == ["a", "b", "c"]
    assert s.deselect_many(["a", "zz"]) == 1
    assert len(s) == 2


def test_retain_drops_items_that_no_longer_exist():
    s = SelectionModel()
    s.select_many(["a", "b", "c"])
    s.click("b", ORDER, toggle=True)  # b off, anchor/focus b
    s.click("b", ORDER, toggle=True)  # b on again
    assert s.retain(["a", "c"]) == ["b"]
    assert s.selected == ["a", "c"]
    assert s.anchor is None and s.focused is None
