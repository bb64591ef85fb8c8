"""Writing and reading the event log (the outbox).

A change and its event commit in one transaction: call :func:`emit` with the connection of
the open :meth:`~comfyvn.store.Database.transaction`.  Ids commit in id order on both engines
(SQLite has one writer at a time; on PostgreSQL appends are serialised, see
:mod:`comfyvn.hooks.pgwake`), so every reader may tail ``id > last seen``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from ..store import Connection
from .pgwake import PG_SERIALISED_INSERT
from .specs import hook_spec

log = logging.getLogger("comfyvn.hooks")
_INSERT_BATCH = 500  # events per INSERT statement (4 parameters each, well under SQLite's limit)


def utc_timestamp(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def emit(conn: Connection, topic: str, data: dict[str, Any], *, project_id: str | None = None) -> dict:
    """Insert one event row inside the caller's transaction and return its envelope."""
    return emit_many(conn, [(topic, data)], project_id=project_id)[0]


def emit_many(conn: Connection, items: list[tuple[str, dict[str, Any]]], *,
              project_id: str | None = None) -> list[dict]:
    """Insert the events of one change in the caller's transaction (one statement, one
    timestamp) and return their envelopes."""
    if not conn.in_transaction:
        raise RuntimeError("emit() must run inside Database.transaction() so the events commit with their change")
    ts = time.time()
    stamp = utc_timestamp(ts)
    rows, envelopes = [], []
    bodies: dict[tuple[int, str], str] = {}  # an alias carries the same data: encode it once
    for topic, data in items:
        spec = hook_spec(topic)
        # hook_event and the timestamps belong to the log: a caller's data cannot set (forge) them;
        # timestamp is epoch seconds (the original comfyvn's), timestamp_utc the same instant in ISO-8601
        payload = {**data, "hook_event": spec.hook_event or spec.name, "timestamp": ts, "timestamp_utc": stamp}
        key = (id(data), payload["hook_event"])
        if key not in bodies:
            bodies[key] = json.dumps(payload, ensure_ascii=False, default=str)
        rows.append((spec.name, ts, project_id, bodies[key]))
        envelopes.append({"id": None, "event": spec.name, "ts": ts, "data": payload})
    # PostgreSQL: the insert takes the event-log lock first (ids commit in id order) and NOTIFYs
    # every bus at commit (see comfyvn.hooks.pgwake)
    insert = "INSERT INTO events(topic, ts, project_id, data) VALUES {}" if isinstance(conn, sqlite3.Connection) \
        else PG_SERIALISED_INSERT
    for start in range(0, len(rows), _INSERT_BATCH):
        chunk = rows[start:start + _INSERT_BATCH]
        # ids ascend in VALUES order (one writer at a time); RETURNING lists them in no set order
        ids = sorted(r[0] for r in conn.execute(
            insert.format(",".join(["(?, ?, ?, ?)"] * len(chunk))) + " RETURNING id",
            [value for row in chunk for value in row]).fetchall())
        for env, event_id in zip(envelopes[start:start + _INSERT_BATCH], ids, strict=True):
            env["id"] = event_id
    return envelopes


def envelope_from_row(row: tuple) -> dict:
    event_id, topic, ts, _project, data = tuple(row)[:5]
    return {"id": event_id, "event": topic, "ts": ts, "data": json.loads(data)}


def _tail(conn: Connection, columns: str, after_id: int, topics: list[str] | None, limit: int):
    """Rows of the events after ``after_id`` in commit order, optionally filtered by topic."""
    where = f" AND topic IN ({','.join('?' * len(topics))})" if topics else ""
    return conn.execute(f"SELECT {columns} FROM events WHERE id > ?{where} ORDER BY id LIMIT ?",
                        [after_id, *(topics or []), limit])


def read_events(conn: Connection, *, after_id: int = 0, topics: list[str] | None = None,
                limit: int = 1000, max_bytes: int | None = None) -> list[dict]:
    """Events with ``id > after_id`` in commit order, optionally filtered by topic; with
    ``max_bytes``, stopping before that much event data (at least one event)."""
    return read_batch(conn, after_id=after_id, topics=topics, limit=limit, max_bytes=max_bytes)[0]


def read_batch(conn: Connection, *, after_id: int = 0, topics: list[str] | None = None,
               limit: int = 1000, max_bytes: int | None = None) -> tuple[list[dict], bool]:
    """:func:`read_events`, and whether more may follow (the batch stopped at ``limit`` or at
    ``max_bytes``): a tailer that gets False has read the log to its end, without a second read."""
    out: list[dict] = []
    used = 0
    for row in _tail(conn, "id, topic, ts, project_id, data", after_id, topics, limit):
        used += len(row[4])
        if out and max_bytes is not None and used > max_bytes:
            return out, True
        out.append(envelope_from_row(row))
    return out, len(out) >= limit


def event_messages(conn: Connection, *, after_id: int, max_bytes: int, topics: list[str] | None = None,
                   limit: int = 1000) -> list[tuple[int, bytes]]:
    """``(id, JSON message)`` of the events after ``after_id`` in commit order, as the WebSocket
    stream sends them (``{"type": "event", "id", "event", "ts", "data"}``), stopping before
    ``max_bytes`` of messages (at least one).  The stored data text is spliced in unparsed."""
    out: list[tuple[int, bytes]] = []
    used = 0
    for event_id, topic, ts, data in _tail(conn, "id, topic, ts, data", after_id, topics, limit):
        text = (f'{{"type":"event","id":{int(event_id)},"event":{json.dumps(topic)},"ts":{json.dumps(ts)},'
                f'"data":{data}}}').encode()
        if out and used + len(text) > max_bytes:
            break
        out.append((int(event_id), text))
        used += len(text)
    return out


def recent_events(conn: Connection, *, limit: int = 25, topics: list[str] | None = None,
                  before_id: int | None = None) -> list[dict]:
    """The newest ``limit`` events (oldest first), using the (topic, id) index when filtered."""
    where, params = _history_filter(topics, before_id)
    rows = conn.execute(f"SELECT id, topic, ts, project_id, data FROM events{where} ORDER BY id DESC LIMIT ?",
                        [*params, limit]).fetchall()
    return [envelope_from_row(r) for r in reversed(rows)]


def history_page(conn: Connection, *, limit: int, max_bytes: int, topics: list[str] | None = None,
                 before_id: int | None = None) -> dict[str, Any]:
    """One page of the newest events before ``before_id`` (oldest first), as ready JSON text.

    The page holds at most ``limit`` events and stops before ``max_bytes`` of event data (but
    always holds at least one event).  Returns ``{"json": '{"items": [...]}'-style text of the
    items array, "count", "bytes", "next_cursor"}``; ``next_cursor`` (the oldest id of the page, as
    a string) is set when older matching events remain.  The stored data text is spliced in as it
    is (it is JSON already), so nothing is parsed or re-encoded: run it off the event loop anyway.
    """
    where, params = _history_filter(topics, before_id)
    sql = f"SELECT id, topic, ts, data FROM events{where} ORDER BY id DESC LIMIT ?"
    parts: list[str] = []
    used = 0
    oldest: int | None = None
    for event_id, topic, ts, data in conn.execute(sql, [*params, limit]):
        if parts and used + len(data) > max_bytes:
            break
        parts.append(f'{{"id":{int(event_id)},"event":{json.dumps(topic)},"ts":{json.dumps(ts)},"data":{data}}}')
        used += len(data)
        oldest = int(event_id)
    next_cursor = None
    if oldest is not None:
        where, params = _history_filter(topics, oldest)
        if conn.execute(f"SELECT 1 FROM events{where} LIMIT 1", params).fetchone() is not None:
            next_cursor = str(oldest)
    return {"json": "[" + ",".join(reversed(parts)) + "]", "count": len(parts), "bytes": used,
            "next_cursor": next_cursor}


def _history_filter(topics: list[str] | None, before_id: int | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if topics:
        where.append(f"topic IN ({','.join('?' * len(topics))})")
        params.extend(topics)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def last_event_id(conn: Connection) -> int:
    row = conn.execute("SELECT MAX(id) FROM events").fetchone()
    return int(row[0] or 0)


def oldest_event_id(conn: Connection) -> int:
    """The id of the oldest event still in the log (0 when it is empty)."""
    row = conn.execute("SELECT MIN(id) FROM events").fetchone()
    return int(row[0] or 0)


def prune_events(db, *, keep_last: int, max_age_s: float, batch: int = 5000) -> int:
    """Delete events older than ``max_age_s`` seconds, except the newest ``keep_last`` (at least
    one) and every event a webhook has still to deliver.  Returns how many were deleted.

    ``db`` is a :class:`~comfyvn.store.Database`.  Deletes ``batch`` rows per transaction, so other
    writers never wait long.  AUTOINCREMENT ids are never reused: a subscriber's cursor stays valid.
    """
    if max_age_s <= 0:
        raise ValueError("max_age_s must be positive")
    cutoff = time.time() - max_age_s
    deleted = 0
    while True:
        with db.transaction() as conn:
            # the first id to keep: newest keep_last, the webhook fan-out cursor, undelivered rows
            keep_from = conn.execute(
                "SELECT MIN(x) FROM (SELECT MAX(id) - ? + 1 AS x FROM events"
                " UNION ALL SELECT last_event_id + 1 FROM webhook_cursor WHERE EXISTS (SELECT 1 FROM webhooks)"
                " UNION ALL SELECT MIN(event_id) FROM webhook_outbox WHERE status = 'pending') AS keep",
                (max(1, int(keep_last)),)).fetchone()[0]
            if keep_from is None:
                return deleted
            n = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id < ? AND ts < ?"
                             " ORDER BY id LIMIT ?)", (keep_from, cutoff, batch)).rowcount
        deleted += n
        if n < batch:
            if deleted:
                log.info("event log: pruned %d events older than %.1f days", deleted, max_age_s / 86400)
            return deleted


def apply_retention(db, ws) -> int:
    """Prune the event log by the workspace's policy: events older than
    ``hooks.history_retention_days`` (7; 0 keeps everything) go, except the newest
    ``hooks.history_limit`` (10,000) and what webhooks still owe.  Returns how many went."""
    from ..config import get_setting

    days = float(get_setting("hooks.history_retention_days", 7, ws) or 0)
    if days <= 0:
        return 0
    return prune_events(db, keep_last=int(get_setting("hooks.history_limit", 10_000, ws)), max_age_s=days * 86400)
