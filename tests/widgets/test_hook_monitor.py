"""HookMonitor: history first, topic/text filters, pause without loss, inspector, events from other processes."""

from __future__ import annotations

import pytest
from comfyvn_widgets.hook_monitor import HookMonitor
from comfyvn_widgets.hook_monitor_model import HookMonitorModel, summarise
from widget_helpers import from_browser, register_in_subprocess, wait_until

from comfyvn.hooks import emit, get_hook_bus


def emit_test(db, message: str) -> None:
    with db.transaction() as conn:
        emit(conn, "on_modder_test", {"message": message})
    get_hook_bus(db).poke()


def test_model_starts_from_recent_history(registry, seeded):
    m = HookMonitorModel(get_hook_bus(registry.db))
    m.load_history(limit=5)
    assert len(m.events) == 5
    assert m.last_id == get_hook_bus(registry.db).last_id()
    newest = m.visible()[0]
    assert newest["id"] == m.last_id


def test_topic_category_and_text_filters(registry, seeded):
    emit_test(registry.db, "hello from a test")
    m = HookMonitorModel(get_hook_bus(registry.db))
    m.load_history(limit=200)
    m.set_filter(topic="on_asset_registered")
    assert {e["event"] for e in m.visible()} == {"on_asset_registered"} and len(m.visible()) == 7
    m.set_filter(topic="category:system")
    assert [e["data"]["message"] for e in m.visible()] == ["hello from a test"]
    m.set_filter(topic="", text="UMBRELLA")
    assert m.visible() and all("umbrella" in str(e["data"]).lower() for e in m.visible())
    with pytest.raises(ValueError, match="unknown topic"):
        m.set_filter(topic="on_nothing")


def test_pause_holds_events_and_resume_shows_them_in_order(registry):
    bus = get_hook_bus(registry.db)
    m = HookMonitorModel(bus)
    m.load_history()
    m.pause()
    for i in range(3):
        emit_test(registry.db, f"m{i}")
    m.receive(bus.events_after(m.last_id))
    assert m.visible() == [] and len(m.held) == 3
    assert m.resume() == 3
    assert [e["data"]["message"] for e in m.visible()] == ["m2", "m1", "m0"]
    m.receive(bus.events_after(0))  # overlap with what is shown is ignored
    assert len(m.events) == 3


def test_capacity_bounds_the_buffer(registry):
    bus = get_hook_bus(registry.db)
    m = HookMonitorModel(bus, capacity=4)
    for i in range(6):
        emit_test(registry.db, f"n{i}")
    m.load_history(limit=50)
    assert [e["data"]["message"] for e in m.visible()] == ["n5", "n4", "n3", "n2"]


def test_summary_says_when_it_cuts_a_list_or_the_line():
    env = {"data": {"uid": "u1", "tags": ["a", "b", "c", "d", "e", "f"]}}
    assert summarise(env) == "uid=u1  tags=a,b,c,d,… +2"
    long = summarise({"data": {"message": "x" * 400}})
    assert len(long) == 240 and long.endswith("…")


def test_summary_names_the_interesting_fields():
    env = {"event": "on_asset_ingest_progress", "data": {"job_id": "abc", "status": "downloading",
                                                           "bytes_done": 5, "bytes_total": 10}}
    assert summarise(env) == "job_id=abc  status=downloading  5/10 bytes"


def test_widget_streams_events_from_another_process_and_inspects_them(registry, seeded, subprocess_env,
                                                                      png_factory):
    mon = HookMonitor(registry.db, history=10)
    try:
        assert len(mon.table.rows) == 10
        mon.topic.value = "on_asset_registered"
        before = len(mon.table.rows)
        uid = register_in_subprocess(subprocess_env, png_factory(200), "props", "props/streamed.png")
        wait_until(lambda: len(mon.table.rows) == before + 1, what="the streamed event")
        top = mon.table.rows[0]
        assert top["cells"]["topic"][0] == "on_asset_registered" and f"uid={uid}" in top["cells"]["summary"]
        from_browser(mon.table, {"kind": "click", "id": top["id"], "shift": False, "toggle": False})
        assert uid in mon.inspector.value and "hook_event" in mon.inspector.value
        assert mon.table.selected == [top["id"]]
    finally:
        mon.close()


def test_widget_pause_button_holds_then_releases(registry):
    mon = HookMonitor(registry.db)
    try:
        mon.pause_button.value = True
        emit_test(registry.db, "while paused")
        wait_until(lambda: mon.pause_button.description == "Resume (1 new)", what="the held event")
        assert mon.table.rows == []
        mon.pause_button.value = False
        assert [r["cells"]["summary"] for r in mon.table.rows] == ["message=while paused"]
        assert "1 event arrived while paused" in mon.status.text
    finally:
        mon.close()
