"""The modder hook bus: specs, envelopes, history, topic filters, cross-process subscribers, resume."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from event_helpers import Collector

from comfyvn.hooks import HOOK_SPECS, UnknownHookError, emit, get_hook_bus, hook_spec, resolve_topics
from comfyvn.hooks.events import utc_timestamp
from comfyvn.store import open_store

ASSET_TOPICS = ["on_asset_registered", "on_asset_saved", "on_asset_meta_updated", "on_asset_removed",
                "on_asset_sidecar_written"]
INGEST_TOPICS = ["on_asset_ingest_enqueued", "on_asset_ingest_progress", "on_asset_ingest_applied",
                 "on_asset_ingest_failed", "on_asset_ingest_updated"]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
#: the start of a child process that appends events to the workspace's store (``db``)
WRITER_PRELUDE = """
import sys
from comfyvn.hooks import emit
from comfyvn.store import open_store
db = open_store()
"""


@pytest.fixture
def bus(ws):
    return get_hook_bus(open_store(ws))


def _emit(bus, topic: str, **data) -> dict:
    with bus.db.transaction() as conn:
        env = emit(conn, topic, data)
    bus.poke()
    return env


def test_specs_describe_every_asset_and_ingest_topic_with_payloads(bus):
    for name in ASSET_TOPICS + INGEST_TOPICS + ["on_modder_test"]:
        assert name in HOOK_SPECS
    assert hook_spec("on_asset_saved").alias_of == "on_asset_registered"
    seed_fields = {
        "on_asset_registered": {"uid", "type", "path", "meta", "sidecar"},
        "on_asset_meta_updated": {"uid", "type", "meta", "path", "sidecar"},
        "on_asset_removed": {"uid", "type", "path", "sidecar"},
        "on_asset_sidecar_written": {"uid", "type", "sidecar", "rel_path"},
    }
    for name, fields in seed_fields.items():
        payload = HOOK_SPECS[name].payload
        assert fields | {"hook_event", "timestamp", "timestamp_utc"} <= set(payload), name
        assert all(isinstance(v, str) and v for v in payload.values())
    asset_specs = bus.specs("asset")
    assert {s["name"] for s in asset_specs} == set(ASSET_TOPICS)
    assert all(s["ws_topic"] == "modder." + s["name"] for s in asset_specs)


def test_envelopes_carry_hook_event_and_a_utc_timestamp(bus):
    env = _emit(bus, "on_asset_removed", uid="u", type="t", path="/p", sidecar="/p.asset.json")
    assert set(env) == {"id", "event", "ts", "data"}
    stored = bus.history(limit=1)[0]
    assert stored == env
    assert stored["data"]["hook_event"] == "asset_removed"
    # the original's epoch seconds under timestamp, the same instant in ISO-8601 under timestamp_utc
    assert isinstance(stored["data"]["timestamp"], float) and stored["data"]["timestamp"] == stored["ts"]
    assert ISO_UTC.match(stored["data"]["timestamp_utc"])
    assert stored["data"]["timestamp_utc"] == utc_timestamp(stored["ts"])
    assert isinstance(stored["ts"], float)


def test_history_by_limit_topic_and_before_id(bus):
    ids = [_emit(bus, "on_modder_test" if i % 2 else "on_asset_removed", n=i)["id"] for i in range(10)]
    newest = bus.history(limit=3)
    assert [e["id"] for e in newest] == ids[-3:]  # the newest N, oldest first
    only_test = bus.history(limit=100, topics=["on_modder_test"])
    assert [e["data"]["n"] for e in only_test] == [1, 3, 5, 7, 9]
    earlier = bus.history(limit=2, topics=["modder.on_modder_test"], before_id=only_test[-2]["id"])
    assert [e["data"]["n"] for e in earlier] == [3, 5]
    assert [e["id"] for e in bus.events_after(ids[6])] == ids[7:]
    with pytest.raises(ValueError):
        bus.history(limit=0)


def test_unknown_hook_names_are_clear_errors(bus):
    for call in (lambda: bus.history(topics=["on_asset_teleported"]),
                 lambda: bus.subscribe(lambda e: None, topics=["on_asset_teleported"]),
                 lambda: bus.events_after(0, topics=["on_asset_teleported"]),
                 lambda: resolve_topics(["on_asset_teleported"])):
        with pytest.raises(UnknownHookError) as err:
            call()
        assert "on_asset_teleported" in str(err.value) and "on_asset_registered" in str(err.value)
    with pytest.raises(UnknownHookError):
        resolve_topics(["on_nothing_*"])
    with pytest.raises(UnknownHookError):
        _emit(bus, "on_asset_teleported", uid="x")
    assert resolve_topics(["modder.on_asset_removed", "on_asset_removed"]) == ["on_asset_removed"]
    assert set(resolve_topics(["on_asset_ingest_*"])) == set(INGEST_TOPICS)
    assert resolve_topics(None) is None and resolve_topics([]) is None


def test_subscribers_get_events_from_another_process_in_order(ws, bus, subprocess_env):
    wanted, unwanted = Collector(), Collector()
    sub = bus.subscribe(wanted, topics=["on_modder_test"])
    sub_other = bus.subscribe(unwanted, topics=["on_asset_removed"])
    code = WRITER_PRELUDE + """for i in range(60):
    with db.transaction() as conn:
        emit(conn, "on_modder_test", {"n": i})
        emit(conn, "on_asset_ingest_progress", {"n": i})
"""
    try:
        subprocess.run([sys.executable, "-c", code, str(ws.db_path)], env=subprocess_env, check=True)
        got = wanted.wait_for(60)
        assert [e["data"]["n"] for e in got] == list(range(60))
        assert all(e["event"] == "on_modder_test" for e in got)
        assert [e["id"] for e in got] == sorted(e["id"] for e in got)
        assert sub.cursor >= got[-1]["id"]
        assert unwanted.items == []
    finally:
        sub.close()
        sub_other.close()


def test_two_writer_processes_interleave_without_gaps(ws, bus, subprocess_env):
    seen = Collector()
    sub = bus.subscribe(seen)
    code = WRITER_PRELUDE + """for i in range(100):
    with db.transaction() as conn:
        emit(conn, "on_modder_test", {"who": sys.argv[2], "n": i})
"""
    try:
        procs = [subprocess.Popen([sys.executable, "-c", code, str(ws.db_path), w], env=subprocess_env)
                 for w in "ab"]
        assert [p.wait() for p in procs] == [0, 0]
        got = seen.wait_for(200)
        ids = [e["id"] for e in got]
        assert ids == sorted(set(ids))
        for who in "ab":  # each writer's events arrive in its own order, none lost
            assert [e["data"]["n"] for e in got if e["data"]["who"] == who] == list(range(100))
    finally:
        sub.close()


def test_resume_from_a_cursor_loses_nothing(bus):
    first = Collector()
    sub = bus.subscribe(first, topics=["on_modder_test"])
    for i in range(3):
        _emit(bus, "on_modder_test", n=i)
    first.wait_for(3)
    cursor = sub.cursor
    sub.close()
    for i in range(3, 8):  # while nobody listens
        _emit(bus, "on_modder_test", n=i)
    resumed = Collector()
    sub2 = bus.subscribe(resumed, topics=["on_modder_test"], after_id=cursor)
    try:
        got = resumed.wait_for(5)
        assert [e["data"]["n"] for e in got] == [3, 4, 5, 6, 7]
        _emit(bus, "on_modder_test", n=8)
        assert [e["data"]["n"] for e in resumed.wait_for(6)] == [3, 4, 5, 6, 7, 8]
        assert first.items and len(first.items) == 3  # a closed subscription gets nothing more
    finally:
        sub2.close()


def test_a_new_subscription_starts_from_now(bus):
    _emit(bus, "on_modder_test", n="old")
    got = Collector()
    sub = bus.subscribe(got)
    try:
        _emit(bus, "on_modder_test", n="new")
        assert [e["data"]["n"] for e in got.wait_for(1)] == ["new"]
    finally:
        sub.close()


def test_a_failing_subscriber_does_not_starve_the_others(bus):
    def broken(env):
        raise RuntimeError("subscriber bug")

    good = Collector()
    bad = bus.subscribe(broken)
    sub = bus.subscribe(good)
    try:
        for i in range(3):
            _emit(bus, "on_modder_test", n=i)
        assert [e["data"]["n"] for e in good.wait_for(3)] == [0, 1, 2]
        assert bad.cursor >= good.items[-1]["id"]
    finally:
        bad.close()
        sub.close()


def test_emit_many_writes_one_change_s_events_together(bus):
    from comfyvn.hooks.events import emit_many

    with pytest.raises(RuntimeError, match="inside Database.transaction"):
        emit_many(bus.db.conn, [("on_modder_test", {"n": 0})])
    with bus.db.transaction() as conn:
        envs = emit_many(conn, [("on_asset_registered", {"uid": "u"}), ("on_asset_saved", {"uid": "u"}),
                                ("modder.on_modder_test", {"n": 1})], project_id="p")
    stored = bus.events_after(envs[0]["id"] - 1)
    assert [e["id"] for e in stored] == [e["id"] for e in envs]
    assert [e["event"] for e in stored] == ["on_asset_registered", "on_asset_saved", "on_modder_test"]
    assert stored[0]["data"]["hook_event"] == stored[1]["data"]["hook_event"] == "asset_registered"
    assert len({e["data"]["timestamp"] for e in stored}) == 1
    with pytest.raises(UnknownHookError):
        with bus.db.transaction() as conn:
            emit_many(conn, [("on_modder_test", {"n": 2}), ("on_nothing", {})])
    assert bus.last_id() == envs[-1]["id"]  # the failed batch left nothing


# ---------------------------------------------------------------------------- retention
def _age(bus, ids: list[int], days: float) -> None:
    import time

    with bus.db.transaction() as conn:
        conn.executemany("UPDATE events SET ts = ? WHERE id = ?", [(time.time() - days * 86400, i) for i in ids])


def test_prune_drops_old_events_but_keeps_the_newest_and_young_ones(bus):
    from comfyvn.hooks import prune_events

    ids = [_emit(bus, "on_modder_test", n=i)["id"] for i in range(30)]
    _age(bus, ids[:25], days=10)  # 25 old, 5 young
    assert prune_events(bus.db, keep_last=10, max_age_s=7 * 86400, batch=4) == 20  # old beyond the newest 10
    assert [e["id"] for e in bus.events_after(0)] == ids[20:]
    assert bus.oldest_id() == ids[20]
    assert prune_events(bus.db, keep_last=1, max_age_s=7 * 86400) == 5  # the rest of the old ones
    assert [e["id"] for e in bus.events_after(0)] == ids[25:]  # young events stay whatever keep_last says
    assert _emit(bus, "on_modder_test")["id"] == ids[-1] + 1  # ids are never reused
    with pytest.raises(ValueError, match="max_age_s"):
        prune_events(bus.db, keep_last=1, max_age_s=0)


def test_prune_keeps_what_webhooks_still_owe(ws, bus):
    import time

    from comfyvn.hooks import prune_events
    from comfyvn.hooks.webhooks import WebhookManager

    WebhookManager(bus.db, ws).register("on_modder_test", "https://hooks.example.com/x")
    ids = [_emit(bus, "on_modder_test", n=i)["id"] for i in range(10)]
    _age(bus, ids, days=30)
    now = time.time()
    with bus.db.transaction() as conn:  # fanned out up to ids[6]; ids[3] is still being retried
        conn.execute("UPDATE webhook_cursor SET last_event_id = ?", (ids[6],))
        conn.execute("INSERT INTO webhook_outbox(webhook_id, event_id, delivery_id, status, attempts, next_attempt_at,"
                     " created_at, updated_at) SELECT id, ?, 'd1', 'pending', 1, ?, ?, ? FROM webhooks",
                     (ids[3], now, now, now))
    assert prune_events(bus.db, keep_last=1, max_age_s=86400) == 3
    assert bus.oldest_id() == ids[3]
    with bus.db.transaction() as conn:
        conn.execute("UPDATE webhook_outbox SET status = 'delivered'")
    assert prune_events(bus.db, keep_last=1, max_age_s=86400) == 4  # up to the fan-out cursor
    with bus.db.transaction() as conn:
        conn.execute("DELETE FROM webhooks")  # nobody left to deliver to: the cursor pins nothing
    assert prune_events(bus.db, keep_last=1, max_age_s=86400) == 2
    assert [e["id"] for e in bus.events_after(0)] == ids[-1:]


def test_retention_policy_comes_from_the_config(ws, bus):
    from comfyvn.config import update_config
    from comfyvn.hooks import apply_retention

    ids = [_emit(bus, "on_modder_test", n=i)["id"] for i in range(6)]
    _age(bus, ids, days=8)
    update_config({"hooks": {"history_retention_days": 0}}, ws)
    assert apply_retention(bus.db, ws) == 0  # 0 keeps everything
    update_config({"hooks": {"history_retention_days": 7, "history_limit": 2}}, ws)
    assert apply_retention(bus.db, ws) == 4
    assert [e["id"] for e in bus.events_after(0)] == ids[-2:]


def test_the_webhook_dispatcher_applies_the_retention_policy(ws, bus):
    from comfyvn.config import update_config
    from comfyvn.hooks.webhooks import WebhookDispatcher

    update_config({"hooks": {"history_limit": 2}}, ws)
    ids = [_emit(bus, "on_modder_test", n=i)["id"] for i in range(5)]
    _age(bus, ids[:3], days=8)
    dispatcher = WebhookDispatcher(bus.db, ws=ws)
    dispatcher._maybe_prune()  # the server's dispatcher thread calls this every 10 minutes
    assert bus.oldest_id() == ids[3]
