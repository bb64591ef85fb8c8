"""Signed webhooks driven from the event log.

* :class:`WebhookManager` stores webhooks in the workspace database (``webhooks`` table).
  Secrets are needed to sign, so they are stored, sealed with AES-GCM under a key kept outside
  the database (``config/secrets.key``, :mod:`comfyvn.hooks.secretbox`); no method ever returns
  them: dicts carry ``has_secret`` instead.
* :class:`WebhookDispatcher` is a daemon thread that

  1. *fills* the ``webhook_outbox`` from the event log: one row per (webhook, event), under a
     persisted cursor (``webhook_cursor``) advanced in the same transaction, so an event
     committed while no dispatcher ran is still delivered after a restart;
  2. *claims* due outbox rows with a lease inside a ``BEGIN IMMEDIATE`` transaction, so several
     server processes on one database never deliver the same row twice at the same time;
  3. POSTs the envelope as JSON, signed with HMAC-SHA256, and logs every attempt in
     ``webhook_deliveries``; failures are retried with exponential backoff up to
     ``hooks.webhook_max_attempts``.

Delivery is *at least once*: a process that dies after the receiver accepted but before it
recorded the success lets the lease expire and the row is sent again with the same
``X-Comfyvn-Delivery`` id.  Receivers dedupe by that header.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config import Workspace, get_setting, workspace
from ..netpolicy import (
    AddressRefused,
    allow_private,
    check_address,
    is_public_address,
    pin_address,
    resolve,
    setting_hint,
    url_port,
)
from ..store import Database, SqliteDatabase
from .events import apply_retention
from .secretbox import SecretKeyError, open_sealed, seal
from .specs import UnknownHookError, hook_spec, resolve_topics

log = logging.getLogger("comfyvn.hooks.webhooks")

SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE_S = 300
CURSOR_NAME = "webhooks"
MAX_URL_LENGTH = 2048
MAX_SECRET_LENGTH = 1024
USER_AGENT = "comfyvn-webhooks/1"
_RETENTION_S = 7 * 24 * 3600  # delivered/failed outbox rows and attempt logs older than this are pruned


# ---------------------------------------------------------------------------- signatures
def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def sign(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw_body}")>`` (the X-Comfyvn-Signature value)."""
    message = _as_bytes(str(timestamp)) + b"." + _as_bytes(body)
    return SIGNATURE_PREFIX + hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, timestamp: int | str, body: str | bytes, signature: str | None,
           tolerance: float = DEFAULT_TOLERANCE_S, *, now: float | None = None) -> bool:
    """True when ``signature`` signs ``timestamp.body`` and the timestamp is within ``tolerance`` s.

    The comparison is constant-time.  A timestamp outside the window (a replay of an old
    request, or a clock far off) fails even with a correct signature.
    """
    if not signature or not secret:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode("ascii"), signature.strip().encode("utf-8", "replace"))


# ---------------------------------------------------------------------------- validation
def normalize_event(event: Any) -> str:
    """A stored event selector: a hook name, an ``on_asset_*`` style pattern or ``*`` (all)."""
    if not isinstance(event, str) or not event.strip():
        raise ValueError("event must be a hook name such as 'on_asset_registered', a pattern such as "
                         "'on_asset_*', or '*' for every hook")
    name = event.strip()
    if name == "*":
        return name
    if name.startswith("modder."):
        name = name[len("modder."):]
    try:
        if name.endswith("*"):
            resolve_topics([name])
            return name
        return hook_spec(name).name
    except UnknownHookError as exc:
        raise ValueError(str(exc)) from None


def _topics_for(selector: str) -> set[str] | None:
    """The topics a stored selector matches (``None`` = all)."""
    if selector == "*":
        return None
    try:
        return set(resolve_topics([selector]) or [])
    except UnknownHookError:  # a hook that was renamed since registration: match nothing
        return set()


def _ip_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Kept for callers: :func:`comfyvn.netpolicy.is_public_address` is the one rule."""
    return is_public_address(ip)


#: the one refusal error of :mod:`comfyvn.netpolicy` (the old name stays for callers)
TargetRefused = AddressRefused


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return resolve(host, port)


def validate_url(url: Any, *, allow_private: bool = False, resolve: bool = True) -> str:
    """Check a webhook URL: http(s), a host, no credentials, not a private/loopback address.

    Hostnames are resolved when ``resolve``; one that resolves to a private address is refused,
    one that does not resolve (yet) is accepted and checked again at every delivery.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("url must be an http:// or https:// URL")
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError("url must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"url must use http or https, got {parts.scheme or 'no scheme'!r}")
    host = parts.hostname
    if not host:
        raise ValueError("url must name a host, e.g. https://example.org/hooks")
    if parts.username is not None or parts.password is not None:
        raise ValueError("url must not embed credentials (user:password@); use the webhook secret")
    try:
        port = url_port(parts) or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"url has an {exc}") from None
    if not allow_private:
        _check_host(host, port, resolve=resolve, strict=False)
    return url


def _check_host(host: str, port: int, *, resolve: bool, strict: bool) -> list:
    """Refuse private targets; returns the resolved addresses (empty when not resolved)."""
    hint = "; " + setting_hint("webhook")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        return [check_address(literal, what="webhook target", area="webhook", allowed=False)]
    lowered = host.lower().rstrip(".")
    if lowered == "localhost" or lowered.endswith(".localhost"):
        raise TargetRefused(f"webhook target {host} is the local machine{hint}")
    if not resolve:
        return []
    try:
        addrs = _resolve(host, port)
    except (OSError, UnicodeError) as exc:
        if strict:
            raise TargetRefused(f"cannot resolve webhook host {host}: {exc}") from None
        return []
    # the one rule of remote pulls and webhooks: every address public, the first one is connected to
    pin_address(host, addrs, what="webhook host", area="webhook", allowed=False, public=_ip_allowed)
    return addrs


def _workspace_for(db: Database) -> Workspace:
    """The workspace whose database ``db`` is (its config holds the webhook settings)."""
    if not isinstance(db, SqliteDatabase):  # a shared store: the current workspace's settings
        return workspace()
    path = Path(db.path)
    if path.name == "comfyvn.sqlite3" and path.parent.name == "data":
        return workspace(path.parent.parent)
    return workspace()


def _allow_private(ws: Workspace) -> bool:
    return allow_private("webhook", ws)


def seal_plaintext_secrets(db: Database, ws: Workspace) -> int:
    """Seal every secret still stored in plain text (rows written before ``hooks.002``);
    returns how many.  The freed plain text is overwritten (``secure_delete``) and the WAL
    checkpointed, so no copy of the old value is left in the database files."""
    if db.conn.execute("SELECT 1 FROM webhooks WHERE secret IS NOT NULL LIMIT 1").fetchone() is None:
        return 0
    conn = db.conn
    sqlite = db.engine == "sqlite"
    if sqlite:
        conn.execute("PRAGMA secure_delete = ON")
    with db.transaction() as tx:
        rows = tx.execute("SELECT id, secret FROM webhooks WHERE secret IS NOT NULL").fetchall()
        for row in rows:
            tx.execute("UPDATE webhooks SET secret_sealed = ?, secret = NULL WHERE id = ?",
                       (seal(ws, row["secret"], row["id"]), row["id"]))
    if sqlite:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.info("sealed %d webhook secret(s) stored in plain text", len(rows))
    return len(rows)


_HAS_SECRET = "(secret_sealed IS NOT NULL OR secret IS NOT NULL) AS has_secret"


# ---------------------------------------------------------------------------- manager
class WebhookManager:
    """Webhook registrations and their delivery log (no secret ever leaves this class)."""

    def __init__(self, db: Database, ws: Workspace | None = None) -> None:
        self.db = db
        self.ws = ws or _workspace_for(db)
        seal_plaintext_secrets(db, self.ws)

    def register(self, event: str, url: str, secret: str | None = None) -> dict:
        """Register ``url`` for ``event`` (hook name, ``on_asset_*`` pattern or ``*``).

        Only events committed after registration are delivered.  Raises :class:`ValueError`
        with a readable message for an unknown event, a bad URL or a refused target.
        """
        selector = normalize_event(event)
        clean_url = validate_url(url, allow_private=_allow_private(self.ws))
        if secret is not None and not isinstance(secret, str):
            raise ValueError("secret must be a string")
        if secret is not None and len(secret) > MAX_SECRET_LENGTH:
            raise ValueError(f"secret is longer than {MAX_SECRET_LENGTH} characters")
        secret = secret or None
        webhook_id = "wh_" + uuid.uuid4().hex[:16]
        now = time.time()
        sealed = seal(self.ws, secret, webhook_id) if secret else None
        with self.db.transaction() as conn:
            last = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
            conn.execute("INSERT INTO webhooks(id, event, url, secret_sealed, start_after_id, created_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (webhook_id, selector, clean_url, sealed, last, now, now))
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, ?, ?)"
                         " ON CONFLICT(name) DO NOTHING",
                         (CURSOR_NAME, last, now))
        log.info("webhook %s registered for %s", webhook_id, selector)
        return self.get(webhook_id)  # type: ignore[return-value]

    def list(self, event: str | None = None) -> list[dict]:
        sql = f"SELECT id, event, url, {_HAS_SECRET}, start_after_id, created_at FROM webhooks"
        params: tuple = ()
        if event is not None:
            sql += " WHERE event = ?"
            params = (normalize_event(event),)
        rows = self.db.query(sql + " ORDER BY created_at, id", params)
        stats = self._stats([r["id"] for r in rows])
        return [self._public(r, stats.get(r["id"], {})) for r in rows]

    def get(self, webhook_id: str) -> dict | None:
        row = self.db.query_one(f"SELECT id, event, url, {_HAS_SECRET}, start_after_id, created_at "
                                "FROM webhooks WHERE id = ?", (str(webhook_id),))
        if row is None:
            return None
        return self._public(row, self._stats([row["id"]]).get(row["id"], {}))

    def delete(self, webhook_id: str) -> bool:
        """Remove a webhook, its pending deliveries and its delivery log."""
        with self.db.transaction() as conn:
            deleted = conn.execute("DELETE FROM webhooks WHERE id = ?", (str(webhook_id),)).rowcount
        if deleted:
            log.info("webhook %s deleted", webhook_id)
        return bool(deleted)

    def deliveries(self, webhook_id: str, limit: int = 50) -> builtins.list[dict]:  # list: the method above
        """Delivery attempts of a webhook, newest first (``[]`` for an unknown webhook)."""
        if not isinstance(limit, int) or limit < 1:
            raise ValueError("limit must be a positive integer")
        rows = self.db.query(
            "SELECT id, webhook_id, delivery_id, event_id, event, attempt, ok, status_code, error, duration_ms, at, "
            "next_attempt_at FROM webhook_deliveries WHERE webhook_id = ? ORDER BY id DESC LIMIT ?",
            (str(webhook_id), min(limit, 1000)))
        return [{**dict(r), "ok": bool(r["ok"]), "final": r["next_attempt_at"] is None} for r in rows]

    def _stats(self, ids: builtins.list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        out: dict[str, dict] = {i: {"pending": 0, "delivered": 0, "failed": 0} for i in ids}
        for r in self.db.query(f"SELECT webhook_id, status, COUNT(*) AS n FROM webhook_outbox "
                               f"WHERE webhook_id IN ({marks}) GROUP BY webhook_id, status", tuple(ids)):
            out[r["webhook_id"]][r["status"]] = r["n"]
        for r in self.db.query(f"SELECT webhook_id, MAX(at) AS at FROM webhook_deliveries "
                               f"WHERE webhook_id IN ({marks}) GROUP BY webhook_id", tuple(ids)):
            out[r["webhook_id"]]["last_attempt_at"] = r["at"]
        return out

    @staticmethod
    def _public(row: sqlite3.Row, stats: dict) -> dict:
        return {
            "id": row["id"],
            "event": row["event"],
            "url": row["url"],
            "has_secret": bool(row["has_secret"]),
            "created_at": row["created_at"],
            "after_event_id": row["start_after_id"],
            "deliveries": {"pending": stats.get("pending", 0), "delivered": stats.get("delivered", 0),
                           "failed": stats.get("failed", 0), "last_attempt_at": stats.get("last_attempt_at")},
        }


# ---------------------------------------------------------------------------- dispatcher
@dataclass
class _Claim:
    outbox_id: int
    webhook_id: str
    event_id: int
    delivery_id: str
    attempt: int
    url: str
    secret: str | None
    secret_error: str | None = None  # the sealed secret did not open: deliver nothing unsigned

    def __repr__(self) -> str:  # never show the secret in a traceback or log line
        return f"_Claim(outbox_id={self.outbox_id}, webhook_id={self.webhook_id!r}, attempt={self.attempt})"


class WebhookDispatcher:
    """Delivers webhook calls from the event log (see the module docstring)."""

    def __init__(self, db: Database, *, ws: Workspace | None = None, poll_interval: float = 0.1,
                 workers: int = 4, owner: str | None = None) -> None:
        self.db = db
        self.ws = ws or _workspace_for(db)
        self.poll_interval = poll_interval
        self.workers = max(1, int(workers))
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()
        self._last_prune = 0.0
        seal_plaintext_secrets(db, self.ws)

    # -- settings (re-read each time so a config edit applies without a restart) --------
    def _max_attempts(self) -> int:
        return max(1, int(get_setting("hooks.webhook_max_attempts", 6, self.ws)))

    def _timeout(self) -> float:
        return float(get_setting("hooks.webhook_timeout_s", 10, self.ws))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): base * 2^(attempt-1)."""
        base = float(get_setting("hooks.webhook_backoff_s", 2.0, self.ws))
        cap = float(get_setting("hooks.webhook_backoff_max_s", 600.0, self.ws))
        return min(cap, base * (2 ** max(0, attempt - 1)))

    def _lease_s(self) -> float:
        return self._timeout() * 3 + 30

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> WebhookDispatcher:
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="comfyvn-webhook")
        self._thread = threading.Thread(target=self._run, name="comfyvn-webhook-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop claiming; deliveries in flight finish (or time out) before this returns."""
        self._stop.set()
        self._wake.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)
        if self._pool:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client:
            self._client.close()
            self._client = None

    @property
    def running(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.fill()
                free = self.workers - self._inflight
                if free > 0:
                    for claim in self.claim(free):
                        with self._inflight_lock:
                            self._inflight += 1
                        assert self._pool is not None
                        self._pool.submit(self._deliver_and_release, claim)
                self._maybe_prune()
            except Exception:
                log.exception("webhook dispatcher step failed; retrying")
            self._wake.wait(self.poll_interval)

    def _deliver_and_release(self, claim: _Claim) -> None:
        try:
            self.deliver(claim)
        except Exception:
            log.exception("webhook %s delivery %s crashed", claim.webhook_id, claim.delivery_id)
        finally:
            with self._inflight_lock:
                self._inflight -= 1
            self._wake.set()

    def run_once(self) -> int:
        """Fill, claim and deliver every due row in the calling thread; returns attempts made."""
        self.fill()
        claims = self.claim(100)
        for claim in claims:
            self.deliver(claim)
        return len(claims)

    # -- 1. fill the outbox from the event log ----------------------------------------------
    def fill(self, batch: int = 1000) -> int:
        """Turn new events into outbox rows; returns how many rows were added."""
        conn = self.db.conn
        row = conn.execute("SELECT last_event_id FROM webhook_cursor WHERE name = ?", (CURSOR_NAME,)).fetchone()
        last = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])
        if row is not None and int(row[0]) >= last:
            return 0
        added = 0
        now = time.time()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT last_event_id FROM webhook_cursor WHERE name = ?", (CURSOR_NAME,)).fetchone()
            hooks = conn.execute("SELECT id, event, start_after_id FROM webhooks").fetchall()
            if row is None:
                start = min((h["start_after_id"] for h in hooks), default=last)
            else:
                start = int(row[0])
            if not hooks:
                cursor = last
            else:
                events = conn.execute("SELECT id, topic FROM events WHERE id > ? ORDER BY id LIMIT ?",
                                      (start, batch)).fetchall()
                matchers = [(h["id"], h["start_after_id"], _topics_for(h["event"])) for h in hooks]
                for ev in events:
                    for hook_id, after, topics in matchers:
                        if ev["id"] > after and (topics is None or ev["topic"] in topics):
                            added += conn.execute(
                                "INSERT INTO webhook_outbox(webhook_id, event_id, delivery_id, status, "
                                "attempts, next_attempt_at, created_at, updated_at) "
                                "VALUES (?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING",
                                (hook_id, ev["id"], str(uuid.uuid4()), now, now, now)).rowcount
                cursor = events[-1]["id"] if events else start
            conn.execute("INSERT INTO webhook_cursor(name, last_event_id, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET last_event_id = excluded.last_event_id, "
                         "updated_at = excluded.updated_at", (CURSOR_NAME, cursor, now))
        if added:
            self._wake.set()
        return added

    # -- 2. claim due rows under a lease ---------------------------------------------------
    def claim(self, limit: int) -> list[_Claim]:
        """Lease up to ``limit`` due rows, at most one in flight per webhook (so, while nothing is
        being retried, each receiver gets its events one at a time in log order)."""
        now = time.time()
        due = "status = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
        if self.db.conn.execute(f"SELECT 1 FROM webhook_outbox WHERE {due} LIMIT 1", (now, now)).fetchone() is None:
            return []
        max_attempts = self._max_attempts()
        lease_until = now + self._lease_s()
        claims: list[_Claim] = []
        with self.db.transaction() as conn:
            hooks = conn.execute(
                "SELECT w.id, w.url, w.secret, w.secret_sealed FROM webhooks w WHERE NOT EXISTS "
                "(SELECT 1 FROM webhook_outbox x WHERE x.webhook_id = w.id AND x.status = 'pending' AND x.lease_until >= ?)", (now,)).fetchall()
            for hook in hooks:
                if len(claims) >= limit:
                    break
                while True:
                    r = conn.execute(f"SELECT id, event_id, delivery_id, attempts FROM webhook_outbox "
                                     f"WHERE webhook_id = ? AND {due} ORDER BY id LIMIT 1",
                                     (hook["id"], now, now)).fetchone()
                    if r is None:
                        break
                    if r["attempts"] >= max_attempts:  # its last attempt was interrupted (process died)
                        conn.execute("UPDATE webhook_outbox SET status = 'failed', lease_owner = NULL, "
                                     "lease_until = NULL, last_error = 'last attempt interrupted', updated_at = ? "
                                     "WHERE id = ?", (now, r["id"]))
                        continue
                    conn.execute("UPDATE webhook_outbox SET attempts = attempts + 1, lease_owner = ?, "
                                 "lease_until = ?, updated_at = ? WHERE id = ?", (self.owner, lease_until, now, r["id"]))
                    secret, secret_error = hook["secret"], None
                    if hook["secret_sealed"]:
                        try:
                            secret = open_sealed(self.ws, hook["secret_sealed"], hook["id"])
                        except SecretKeyError as exc:
                            secret_error = str(exc)
                    claims.append(_Claim(r["id"], hook["id"], r["event_id"], r["delivery_id"], r["attempts"] + 1,
                                         hook["url"], secret, secret_error))
                    break
        return claims

    # -- 3. deliver one claimed row ----------------------------------------------------------
    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(follow_redirects=False, trust_env=False,
                                            headers={"User-Agent": USER_AGENT})
            return self._client

    def deliver(self, claim: _Claim) -> dict:
        """POST one claimed delivery and record the attempt; returns the attempt record."""
        row = self.db.query_one("SELECT id, topic, ts, project_id, data FROM events WHERE id = ?", (claim.event_id,))
        status_code: int | None = None
        error: str | None = None
        started = time.monotonic()
        if row is None:
            error = f"event {claim.event_id} is no longer in the event log"
            topic = "?"
        elif claim.secret_error:
            error, topic = claim.secret_error, row["topic"]
        else:
            envelope = {"id": row["id"], "event": row["topic"], "ts": row["ts"], "data": json.loads(row["data"])}
            topic = envelope["event"]
            body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            timestamp = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "X-Comfyvn-Event": topic,
                "X-Comfyvn-Delivery": claim.delivery_id,
                "X-Comfyvn-Timestamp": timestamp,
                "X-Comfyvn-Attempt": str(claim.attempt),
                "X-Comfyvn-Webhook": claim.webhook_id,
            }
            if claim.secret:
                headers["X-Comfyvn-Signature"] = sign(claim.secret, timestamp, body)
            try:
                status_code = self._post(claim.url, body, headers)
                if not 200 <= status_code < 300:
                    error = f"receiver answered HTTP {status_code}"
            except TargetRefused as exc:
                error = str(exc)
            except httpx.TimeoutException:
                error = f"timed out after {self._timeout():g} s"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        duration_ms = (time.monotonic() - started) * 1000
        return self._record(claim, topic, status_code, error, duration_ms, final_now=row is None)

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST to the address the host resolved to (checked at send time: no DNS rebinding)."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        https = parts.scheme.lower() == "https"
        port = parts.port or (443 if https else 80)
        target = httpx.URL(url)
        extensions: dict[str, Any] = {}
        addrs = _check_host(host, port, resolve=True, strict=True) if not _allow_private(self.ws) else []
        if addrs and str(addrs[0]) != host:
            target = target.copy_with(host=str(addrs[0]))
            headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
            if https:
                extensions["sni_hostname"] = host
        timeout = self._timeout()
        with self._http().stream("POST", target, content=body, headers=headers, timeout=timeout,
                                 extensions=extensions) as resp:
            for _chunk in resp.iter_raw(1024):  # read at most a little of the answer
                break
            return resp.status_code

    def _record(self, claim: _Claim, topic: str, status_code: int | None, error: str | None,
                duration_ms: float, *, final_now: bool = False) -> dict:
        now = time.time()
        ok = error is None
        next_at: float | None = None
        if not ok and not final_now and claim.attempt < self._max_attempts():
            next_at = now + self.backoff(claim.attempt)
        status = "delivered" if ok else ("pending" if next_at is not None else "failed")
        record = {"webhook_id": claim.webhook_id, "delivery_id": claim.delivery_id, "event_id": claim.event_id,
                  "event": topic, "attempt": claim.attempt, "ok": ok, "status_code": status_code, "error": error,
                  "duration_ms": round(duration_ms, 3), "at": now, "next_attempt_at": next_at}
        with self.db.transaction() as conn:
            current = conn.execute("SELECT lease_owner FROM webhook_outbox WHERE id = ?", (claim.outbox_id,)).fetchone()
            if current is None:  # the webhook was deleted meanwhile
                return record
            if current["lease_owner"] == self.owner:
                conn.execute("UPDATE webhook_outbox SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at), "
                             "lease_owner = NULL, lease_until = NULL, last_status = ?, last_error = ?, updated_at = ? "
                             "WHERE id = ?", (status, next_at, status_code, error, now, claim.outbox_id))
            conn.execute("INSERT INTO webhook_deliveries(webhook_id, delivery_id, event_id, event, attempt, ok, "
                         "status_code, error, duration_ms, at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (claim.webhook_id, claim.delivery_id, claim.event_id, topic, claim.attempt, int(ok),
                          status_code, error, record["duration_ms"], now, next_at))
        if ok:
            log.info("webhook %s delivery %s (%s) attempt %d: HTTP %s", claim.webhook_id, claim.delivery_id, topic,
                     claim.attempt, status_code)
        else:
            log.warning("webhook %s delivery %s (%s) attempt %d failed: %s%s", claim.webhook_id, claim.delivery_id,
                        topic, claim.attempt, error,
                        f"; retry in {next_at - now:.1f} s" if next_at else "; giving up")
        return record

    def _maybe_prune(self) -> None:
        now = time.time()
        if now - self._last_prune < 600:
            return
        self._last_prune = now
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM webhook_outbox WHERE status IN ('delivered', 'failed') AND updated_at < ?",
                         (now - _RETENTION_S,))
            conn.execute("DELETE FROM webhook_deliveries WHERE at < ?", (now - _RETENTION_S,))
        apply_retention(self.db, self.ws)  # the event log itself (after the outbox rows that pin it)


__all__ = [
    "TargetRefused",
    "WebhookDispatcher",
    "WebhookManager",
    "normalize_event",
    "seal_plaintext_secrets",
    "sign",
    "validate_url",
    "verify",
]
