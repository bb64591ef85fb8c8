"""Shared pieces of the reliability harnesses (crash, concurrency, load) and their tests.

* :func:`start_server` / :func:`restart_server`: a real ``jupyter server`` process with the
  comfyvn extension (``tests/live_server.py`` does the starting; this adds the harness config).
* :class:`WebhookReceiver`: a local HTTP receiver that checks every delivery's signature and
  records it, so a harness can prove "every committed event was delivered" and count repeats
  (a body cut short by a dying sender counts as ``cut_deliveries``, not as a bad signature:
  :func:`classify_delivery`).
* :class:`WorkspaceView`: read-only looks at a workspace's database and files (never opens a
  registry or a queue, so a harness never does recovery work the server should do itself).
* :func:`audit_workspace`: the crash/concurrency invariants as a list of readable problems.
* :class:`RssSampler`, :func:`percentile`, :func:`trend_mb_per_min`: load figures.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = REPO_ROOT / "tests"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
for _p in (str(TESTS_DIR), str(REPO_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from comfyvn.config import Workspace, workspace  # noqa: E402
from comfyvn.hooks.webhooks import verify  # noqa: E402
from comfyvn.ingest.jobs import STATUSES, UNSETTLED, JobStatus, sql_in  # noqa: E402

SIDECAR_SUFFIX = ".asset.json"
WEBHOOK_SECRET = "reliability-webhook-secret-7f3a"

#: settings every harness server runs with: ingest on, local receivers and fake providers allowed
HARNESS_CONFIG: dict[str, Any] = {
    "features": {"enable_asset_ingest": True, "require_remote_terms_ack": True},
    "ingest": {"rate_limit_rps": 200.0, "rate_limit_burst": 50, "allow_private_addresses": True,
               "allow_insecure_http": True},
    "hooks": {"allow_private_webhook_targets": True, "webhook_backoff_s": 0.2, "webhook_backoff_max_s": 2.0,
              "webhook_timeout_s": 2, "webhook_max_attempts": 50},
}


def deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ---------------------------------------------------------------------------- the server
def start_server(tmp_dir: Path, config: dict | None = None, *, token: str = "reliability-token",
                 env: dict[str, str] | None = None):
    """Start a real ``jupyter server`` on ``tmp_dir/workspace`` (see ``tests/live_server.py``)."""
    from live_server import start_live_server

    return start_live_server(Path(tmp_dir), token=token, config=config, env=env)


def restart_server(tmp_dir: Path, *, token: str = "reliability-token", env: dict[str, str] | None = None):
    """Start the server again on the same workspace (config untouched)."""
    return start_server(tmp_dir, None, token=token, env=env)


def sigkill(server) -> None:
    """SIGKILL the server process (no cleanup runs) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(server.proc.pid, 9)
    server.proc.wait(timeout=30)


# ---------------------------------------------------------------------------- webhook receiver
@dataclass
class Delivery:
    delivery_id: str
    event_id: int | None
    event: str
    attempt: int
    signature_ok: bool
    at: float
    cut: bool = False  # the body ended before its Content-Length: a cut connection, not a forgery


def classify_delivery(secret: str, headers: Any, body: bytes, declared_length: int | None) -> str:
    """``"ok"``, ``"cut"`` (fewer bytes than the declared Content-Length arrived: the sender
    died or the connection dropped mid-body) or ``"bad_signature"`` (a complete body whose
    signature does not verify: a forgery or a bug)."""
    if declared_length is not None and len(body) < declared_length:
        return "cut"
    ok = verify(secret, headers.get("X-Comfyvn-Timestamp", ""), body, headers.get("X-Comfyvn-Signature"))
    return "ok" if ok else "bad_signature"


class WebhookReceiver:
    """``http://127.0.0.1:<port>/hook``: verifies ``X-Comfyvn-Signature`` and records each delivery."""

    def __init__(self, secret: str = WEBHOOK_SECRET) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.raw_bodies: list[bytes] = []
        self.raw_requests: list[tuple[dict[str, str], bytes]] = []  # (headers, body) as received
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = self.rfile.read(length)
                except (ConnectionError, TimeoutError):
                    body = b""
                verdict = classify_delivery(receiver.secret, self.headers, body, length)
                ok = verdict == "ok"
                try:
                    event_id = int(json.loads(body).get("id"))
                except (ValueError, TypeError, AttributeError):
                    event_id = None
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.headers.get("X-Comfyvn-Delivery", ""), event_id,
                                                        self.headers.get("X-Comfyvn-Event", ""),
                                                        int(self.headers.get("X-Comfyvn-Attempt") or 0), ok,
                                                        time.time(), cut=verdict == "cut"))
                    receiver.raw_bodies.append(body)
                    receiver.raw_requests.append((dict(self.headers.items()), body))
                if verdict == "cut":  # nobody is left to answer
                    self.close_connection = True
                    return
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def stats(self, expected_event_ids: set[int]) -> dict[str, Any]:
        """Delivered / missing / duplicate figures against the event ids that must have arrived."""
        got = self.snapshot()
        good = [d for d in got if d.signature_ok]
        by_event = Counter(d.event_id for d in good)
        received = set(by_event)
        missing = sorted(expected_event_ids - received)
        return {
            "expected": len(expected_event_ids),
            "delivered": len(expected_event_ids & received),
            "missing": len(missing),
            "missing_ids": missing[:50],
            "deliveries": len(got),
            "cut_deliveries": sum(1 for d in got if d.cut),  # bodies cut short (e.g. by a SIGKILL)
            "bad_signatures": sum(1 for d in got if not d.signature_ok and not d.cut),  # complete yet unverified
            "duplicate_deliveries": sum(n - 1 for n in by_event.values() if n > 1),
            "events_delivered_more_than_once": sum(1 for n in by_event.values() if n > 1),
        }


# ---------------------------------------------------------------------------- read-only workspace view
class WorkspaceView:
    """Read-only queries on a workspace's database (a fresh connection per call)."""

    def __init__(self, ws: Workspace | Path | str) -> None:
        self.ws = ws if isinstance(ws, Workspace) else workspace(ws)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.ws.db_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def rows(self, sql: str, params: tuple = ()) -> list[dict]:
        conn = self._connect()
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def scalar(self, sql: str, params: tuple = ()) -> Any:
        conn = self._connect()
        try:
            row = conn.execute(sql, params).fetchone()
            return row[0] if row else None
        finally:
            conn.close()

    def has_table(self, name: str) -> bool:
        return bool(self.scalar("SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name=?", (name,)))

    def last_event_id(self) -> int:
        return int(self.scalar("SELECT COALESCE(MAX(id), 0) FROM events") or 0)

    def jobs(self) -> dict[str, dict]:
        if not self.has_table("ingest_jobs"):
            return {}
        return {r["job_id"]: r for r in self.rows("SELECT * FROM ingest_jobs")}

    def pending_jobs(self) -> list[dict]:
        """The jobs not yet settled (:data:`comfyvn.ingest.jobs.UNSETTLED`: queued, downloading, applying)."""
        if not self.has_table("ingest_jobs"):
            return []
        return self.rows("SELECT job_id, status, next_attempt_at, error FROM ingest_jobs"
                         f" WHERE status IN {sql_in(UNSETTLED)}")

    def assets(self, project: str = "default") -> list[dict]:
        rows = self.rows("SELECT * FROM assets WHERE project_id = ?", (project,))
        for r in rows:
            r["tags"] = json.loads(r["tags"] or "[]")
        return rows

    def tags(self, project: str = "default") -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in self.rows("SELECT uid, tag FROM asset_tags WHERE project_id = ?", (project,)):
            out.setdefault(r["uid"], set()).add(r["tag"])
        return out

    def thumbnails_pending(self) -> int:
        return int(self.scalar("SELECT COUNT(*) FROM thumbnails WHERE status = 'pending'") or 0)

    def outbox_pending(self) -> int:
        if not self.has_table("webhook_outbox"):
            return 0
        return int(self.scalar("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'") or 0)

    def outbox_failed(self) -> int:
        if not self.has_table("webhook_outbox"):
            return 0
        return int(self.scalar("SELECT COUNT(*) FROM webhook_outbox WHERE status = 'failed'") or 0)

    def webhook_cursor(self) -> int:
        if not self.has_table("webhook_cursor"):
            return 0
        return int(self.scalar("SELECT COALESCE(MAX(last_event_id), 0) FROM webhook_cursor") or 0)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".part") or ".tmp" in name)


def audit_workspace(ws: Workspace, *, acked_jobs: set[str] | None = None,
                    acked_tags: dict[str, set[str]] | None = None, project: str = "default",
                    check_pending: bool = True) -> list[str]:
    """The invariants after a crash and restart, as readable problems (empty = all hold).

    - every acknowledged job still exists, with a legal status;
    - every asset row has its file (same SHA-256: no partial file under a final name) and a
      sidecar that parses and agrees with the row (hash, version, tags);
    - every file under the assets root belongs to a row (no orphan, no stray temporary file);
    - every staged job's staging file exists with the job's digest; an applied job's asset exists;
    - every acknowledged tag edit is present;
    - (``check_pending``) no job is left in queued / downloading / applying.
    """
    view = WorkspaceView(ws)
    problems: list[str] = []
    jobs = view.jobs()
    for job_id in sorted(acked_jobs or ()):
        if job_id not in jobs:
            problems.append(f"job lost: {job_id} was acknowledged but is not in the queue")
    assets = {r["uid"]: r for r in view.assets(project)}
    for job in jobs.values():
        if job["status"] not in STATUSES:
            problems.append(f"job {job['job_id']} has an illegal status {job['status']!r}")
        if job["status"] == JobStatus.STAGED:
            staged = ws.staging_dir / (job["staging_path"] or "")  # a name in the staging folder (or an old absolute path)
            if not job["staging_path"] or not staged.is_file():
                problems.append(f"staged job {job['job_id']} has no staging file ({job['staging_path']})")
            elif job["digest"] and sha256_of(staged) != job["digest"]:
                problems.append(f"staged job {job['job_id']}: staging file {staged} does not match its digest")
        if job["status"] == JobStatus.APPLIED and job["asset_uid"] and job["project_id"] == project \
                and job["asset_uid"] not in assets:
            problems.append(f"applied job {job['job_id']} points at missing asset {job['asset_uid']}")
        if check_pending and job["status"] in UNSETTLED:
            problems.append(f"job {job['job_id']} still {job['status']} after the restart settled")
    root = ws.assets_root / project
    by_path = {r["path"]: r for r in assets.values()}
    for rec in assets.values():
        path = root / rec["path"]
        if not path.is_file():
            problems.append(f"row without file: {rec['uid']} -> {rec['path']}")
            continue
        if sha256_of(path) != rec["hash"]:
            problems.append(f"partial or foreign file under a final name: {rec['path']} (hash differs from row)")
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        try:
            doc = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"row without sidecar: {rec['uid']} -> {sidecar.name}")
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"corrupt sidecar {sidecar}: {exc}")
            continue
        if not isinstance(doc, dict) or doc.get("hash") != rec["hash"] or doc.get("uid") != rec["uid"]:
            problems.append(f"sidecar {sidecar.name} does not describe its row")
        elif doc.get("version") != rec["version"] or sorted(doc.get("tags") or []) != sorted(rec["tags"]):
            problems.append(f"stale sidecar {sidecar.name}: version {doc.get('version')} vs row {rec['version']}")
    if root.exists():
        for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
            rel = path.relative_to(root).as_posix()
            if is_temp_name(path.name):
                problems.append(f"stray temporary file in the assets root: {rel}")
            elif rel.endswith(SIDECAR_SUFFIX):
                if rel[: -len(SIDECAR_SUFFIX)] not in by_path:
                    problems.append(f"sidecar without a row: {rel}")
            elif rel not in by_path:
                problems.append(f"file without a row in the assets root: {rel}")
    tags = view.tags(project)
    for uid, wanted in (acked_tags or {}).items():
        if uid not in assets:
            problems.append(f"asset {uid} with acknowledged tag edits disappeared")
            continue
        lost = wanted - tags.get(uid, set())
        if lost:
            problems.append(f"lost tag update on {uid}: {sorted(lost)[:5]} ({len(lost)} tags)")
    return problems


def run_enforcer(ws: Workspace, *, timeout: float = 120) -> tuple[bool, dict | str]:
    """Run the enforcer CLI as a dry run; returns (clean, report or error text)."""
    env = dict(os.environ, COMFYVN_HOME=str(ws.root))
    proc = subprocess.run([sys.executable, "-m", "comfyvn.registry.rebuild", "--dry-run", "--json"],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ws.root)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return False, f"exit {proc.returncode}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    clean = enforcer_clean(report)
    return clean, report if clean else {"integrity_findings": integrity_findings(report)[:20],
                                        "counts": report.get("counts")}


#: enforcer findings that mean lost or inconsistent data (missing tags/licences are metadata hygiene)
HYGIENE_KINDS = {"missing_tags", "missing_license"}


def integrity_findings(report: dict) -> list[dict]:
    """The findings of an ``audit_sidecars`` report that are about integrity, not metadata hygiene."""
    return [f for f in report["findings"] if f["kind"] not in HYGIENE_KINDS and not f.get("fixed")]


def enforcer_clean(report: dict) -> bool:
    """True when an ``audit_sidecars`` report has no unfixed integrity finding."""
    return not integrity_findings(report)


# ---------------------------------------------------------------------------- figures
def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    return None


@dataclass
class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    pid: int
    interval: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.samples.append((time.monotonic() - self._t0, rss))
            self._stop.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def trend_mb_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, in MiB per minute."""
    if len(samples) < 3:
        return None
    xs = [t for t, _ in samples]
    ys = [b / (1024 * 1024) for _, b in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 60


def write_results(name: str, figures: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True, default=str) + "\n")
    return path
