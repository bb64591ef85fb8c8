"""Token buckets per provider key, stored in the workspace database.

Every process of a workspace (server, kernels, CLIs) draws from the same bucket row, inside
a write transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: plus a transaction-level advisory
lock per bucket), so the pace holds however many downloaders run, on however many machines.  A bucket
refills at ``rate`` tokens per second up to ``burst``; an upstream 429 blocks the key until
its Retry-After has passed.

Settings: ``ingest.rate_limit_rps`` (default :data:`DEFAULT_RATE_LIMIT`),
``ingest.rate_limit_burst`` (default 1), overridable per provider with
``ingest.providers.<name>.rate_limit_rps`` / ``rate_limit_burst``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..config import Workspace, get_setting
from ..store import Connection, Database
from .errors import IngestError

DEFAULT_RATE_LIMIT = 0.33  # requests per second (~1 every 3 s), per provider key
DEFAULT_BURST = 1


@dataclass(frozen=True)
class BucketConfig:
    rate: float
    burst: float


class RateLimiter:
    def __init__(self, db: Database, ws: Workspace | None = None) -> None:
        self.db = db
        self.ws = ws

    # -- settings ----------------------------------------------------------------------
    def config(self, key: str) -> BucketConfig:
        rate = get_setting(f"ingest.providers.{key}.rate_limit_rps", None, self.ws)
        if rate is None:
            rate = get_setting("ingest.rate_limit_rps", DEFAULT_RATE_LIMIT, self.ws)
        burst = get_setting(f"ingest.providers.{key}.rate_limit_burst", None, self.ws)
        if burst is None:
            burst = get_setting("ingest.rate_limit_burst", DEFAULT_BURST, self.ws)
        try:
            rate, burst = float(rate), float(burst)
        except (TypeError, ValueError):
            raise IngestError(f"ingest.rate_limit_rps / rate_limit_burst for {key!r} must be numbers, "
                              f"got {rate!r} / {burst!r}", code="bad_config") from None
        if not (rate > 0 and math.isfinite(rate)) or burst < 1:
            raise IngestError(f"rate limit for {key!r} must have rate_limit_rps > 0 and rate_limit_burst >= 1, "
                              f"got {rate} / {burst}", code="bad_config")
        return BucketConfig(rate, burst)

    # -- the bucket --------------------------------------------------------------------
    def _level(self, conn: Connection, key: str, cfg: BucketConfig, now: float) -> tuple[float, float]:
        row = conn.execute("SELECT tokens, updated_at, blocked_until FROM ingest_rate_buckets WHERE key = ?",
                           (key,)).fetchone()
        if row is None:
            return cfg.burst, 0.0
        tokens = min(cfg.burst, row[0] + max(0.0, now - row[1]) * cfg.rate)
        return tokens, row[2]

    def try_acquire(self, key: str, *, conn: Connection | None = None, now: float | None = None) -> float:
        """Take one token: returns 0.0 on success, else the seconds until one is available.

        Pass ``conn`` to take the token inside a transaction you already hold (so the
        token and the job claim commit together).
        """
        cfg = self.config(key)
        now = time.time() if now is None else now
        if conn is None:
            with self.db.transaction() as own:
                return self._acquire(own, key, cfg, now)
        return self._acquire(conn, key, cfg, now)

    def _acquire(self, conn: Connection, key: str, cfg: BucketConfig, now: float) -> float:
        if self.db.engine == "postgresql":  # one taker of this bucket at a time on every machine, held to commit
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"comfyvn:ratelimit:{key}",))
        tokens, blocked_until = self._level(conn, key, cfg, now)
        if blocked_until > now:
            return blocked_until - now  # the row stays as block() left it
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / cfg.rate
        conn.execute("INSERT INTO ingest_rate_buckets(key, tokens, updated_at, blocked_until) VALUES (?,?,?,0)"
                     " ON CONFLICT(key) DO UPDATE SET tokens = excluded.tokens, updated_at = excluded.updated_at",
                     (key, tokens, now))
        return wait

    def block(self, key: str, seconds: float, *, conn: Connection | None = None) -> None:
        """An upstream 429: nobody of this workspace pulls from ``key`` for ``seconds``."""
        until = time.time() + max(0.0, float(seconds))
        # one token waits at the end of the pause; nothing accrues during it
        sql = ("INSERT INTO ingest_rate_buckets(key, tokens, updated_at, blocked_until) VALUES (?, 1, ?, ?)"
               " ON CONFLICT(key) DO UPDATE SET tokens = 1, updated_at = CASE WHEN excluded.updated_at >"
               " ingest_rate_buckets.updated_at THEN excluded.updated_at ELSE ingest_rate_buckets.updated_at END,"
               " blocked_until = CASE WHEN excluded.blocked_until > ingest_rate_buckets.blocked_until"
               " THEN excluded.blocked_until ELSE ingest_rate_buckets.blocked_until END")
        if conn is None:
            with self.db.transaction() as own:
                own.execute(sql, (key, until, until))
        else:
            conn.execute(sql, (key, until, until))

    def status(self, key: str) -> dict:
        """``{"rate", "burst", "tokens", "retry_after"}`` without taking a token."""
        cfg = self.config(key)
        now = time.time()
        tokens, blocked_until = self._level(self.db.conn, key, cfg, now)
        if blocked_until > now:
            tokens, retry_after = 0.0, blocked_until - now
        else:
            retry_after = 0.0 if tokens >= 1.0 else (1.0 - tokens) / cfg.rate
        return {"rate": cfg.rate, "burst": cfg.burst, "tokens": round(tokens, 3),
                "retry_after": round(retry_after, 3)}
