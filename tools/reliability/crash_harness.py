"""Crash harness: a real server under a mixed ingest workload, SIGKILLed at random points.

Each cycle starts workload threads against the live ``jupyter server`` (local enqueues,
duplicate content, streamed uploads, remote pulls from the fake Civitai / Hugging Face /
generic servers, applies, bulk tag edits, test events; one signed webhook receives every
event), kills the server with SIGKILL after a random delay (some cycles kill it again while
it is still recovering), restarts it, waits for the queue to finish pending work *by itself*
(only the database is polled), and checks:

* no acknowledged job is lost; statuses are legal; nothing is left queued/downloading/applying;
* every asset row has its file (same SHA-256, so no partial file under a final name) and a
  sidecar agreeing with it; no file, sidecar or temporary file in the assets root without a row;
* every staged job's staging file matches its digest; acknowledged tag edits are all present;
* the enforcer (``python -m comfyvn.registry.rebuild --dry-run --json``) reports clean.

At the end every event committed before any kill must have reached the webhook receiver
with a valid signature: delivery is **at least once**; duplicates are counted and reported.

    python tools/reliability/crash_harness.py            # CI setting: 8 kills
    python tools/reliability/crash_harness.py --long     # 50 kills (docs/RELIABILITY.md figures)

Exit status 0 when every invariant held; the figures go to ``bench/results/reliability_crash.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import relkit  # noqa: E402

from comfyvn.config import workspace  # noqa: E402

SHORT_KILLS, LONG_KILLS = 8, 50
GENERIC_FILES = 40  # distinct remote files on the fake CDN (a few served slowly, so kills land mid-download)
SLOW_FILES = 6


def make_content(ext: str, rng: random.Random) -> bytes:
    """Real images and sounds (thumbnails and waveforms must succeed), random bytes otherwise."""
    if ext == ".png":
        from PIL import Image

        img = Image.new("RGB", (rng.randint(8, 300), rng.randint(8, 300)), tuple(rng.randbytes(3)))
        img.putpixel((0, 0), tuple(rng.randbytes(3)))
        out = io.BytesIO()
        img.save(out, "PNG")
        return out.getvalue()
    if ext == ".wav":
        out = io.BytesIO()
        with wave.open(out, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(rng.randbytes(2 * rng.randint(800, 16000)))
        return out.getvalue()
    return rng.randbytes(rng.randint(200, 400_000))


class Workload:
    """Threads issuing a random mix of API calls until stopped; records what the server acknowledged."""

    def __init__(self, state: Harness, server, rng: random.Random, threads: int = 3) -> None:
        self.state = state
        self.server = server
        self.rng = rng
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(random.Random(rng.random()),), daemon=True)
                        for _ in range(threads)]

    def start(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=60)

    def _run(self, rng: random.Random) -> None:
        ops = [(self.local_new, 25), (self.local_dup, 10), (self.upload, 10), (self.remote, 15),
               (self.apply, 17), (self.tags, 18), (self.test_event, 5)]
        names, weights = zip(*ops, strict=True)
        with httpx.Client(base_url=self.server.base_url, headers=self.server.headers, timeout=30) as http:
            while not self.stop_event.is_set():
                op = rng.choices(names, weights)[0]
                try:
                    op(http, rng)
                except httpx.HTTPError:
                    if not self.stop_event.is_set() and self.server.alive:
                        self.state.count("transport_errors_while_alive")
                    time.sleep(0.05)

    def _check(self, resp: httpx.Response, what: str) -> dict | None:
        if resp.status_code >= 500:
            self.state.note_error(f"{what}: HTTP {resp.status_code} {resp.text[:300]}")
            return None
        if resp.status_code >= 400:
            self.state.count(f"http_{resp.status_code}")
            return None
        return resp.json()

    def _enqueued(self, job: dict | None) -> None:
        if job and job.get("job_id"):
            self.state.ack_job(job)

    def local_new(self, http: httpx.Client, rng: random.Random) -> None:
        path = self.state.new_source_file(rng)
        body = {"source_path": str(path), "asset_type_hint": rng.choice(["images", "audio", "models", None]),
                "metadata": {"tags": f"crash,{path.stem}"}}
        self._enqueued(self._check(http.post("api/ingest/queue", json=body), "enqueue local"))

    def local_dup(self, http: httpx.Client, rng: random.Random) -> None:
        path = self.state.duplicate_source_file(rng)
        if path is not None:
            self._enqueued(self._check(http.post("api/ingest/queue", json={"source_path": str(path)}),
                                       "enqueue duplicate"))

    def upload(self, http: httpx.Client, rng: random.Random) -> None:
        data = rng.randbytes(rng.randint(1_000, 300_000))
        resp = http.post("api/ingest/upload", params={"filename": f"up-{rng.getrandbits(40):x}.bin"}, content=data)
        self._enqueued(self._check(resp, "upload"))

    def remote(self, http: httpx.Client, rng: random.Random) -> None:
        provider, url = rng.choice(self.state.remote_urls)
        body = {"provider": provider, "remote_url": url, "terms_acknowledged": True}
        self._enqueued(self._check(http.post("api/ingest/queue", json=body), "enqueue remote"))

    def apply(self, http: httpx.Client, rng: random.Random) -> None:
        staged = self.state.candidates_to_apply(rng)
        body = {"job_ids": staged} if staged and rng.random() < 0.8 else {}
        out = self._check(http.post("api/ingest/apply", json=body), "apply")
        if out:
            for job in out.get("applied", []):
                if job.get("asset_uid"):
                    self.state.add_uid(job["asset_uid"])

    def tags(self, http: httpx.Client, rng: random.Random) -> None:
        uids = self.state.sample_uids(rng, rng.randint(1, 4))
        if not uids:
            return
        tag = self.state.new_tag()
        out = self._check(http.post("assets/bulk", json={"uids": uids, "add_tags": [tag]}), "bulk tags")
        if out is not None:
            self.state.ack_tag(uids, tag)

    def test_event(self, http: httpx.Client, rng: random.Random) -> None:
        self._check(http.post("api/modder/hooks/test", json={"message": f"crash {rng.getrandbits(32):x}"}),
                    "test event")


class Harness:
    def __init__(self, root: Path, kills: int, seed: int, verbose: bool = True) -> None:
        self.root = root
        self.kills = kills
        self.rng = random.Random(seed)
        self.seed = seed
        self.verbose = verbose
        self.lock = threading.Lock()
        self.acked_jobs: set[str] = set()
        self.job_kinds: Counter[str] = Counter()
        self.acked_tags: dict[str, set[str]] = {}
        self.uids: list[str] = []
        self.sources: list[Path] = []
        self.counters: Counter[str] = Counter()
        self.errors: list[str] = []
        self.problems: list[dict] = []
        self.tag_seq = 0
        self.file_seq = 0
        self.kill_event_ids: list[int] = []
        self.cycle_seconds: list[float] = []
        self.quick_kills = 0

    # -- shared state (workload threads)
    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    def note_error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)

    def ack_job(self, job: dict) -> None:
        with self.lock:
            self.acked_jobs.add(job["job_id"])
            self.job_kinds[job.get("provider", "?")] += 1

    def ack_tag(self, uids: list[str], tag: str) -> None:
        with self.lock:
            for uid in uids:
                self.acked_tags.setdefault(uid, set()).add(tag)
            self.counters["tag_edits_acked"] += 1

    def add_uid(self, uid: str) -> None:
        with self.lock:
            if uid not in self.uids:
                self.uids.append(uid)

    def sample_uids(self, rng: random.Random, n: int) -> list[str]:
        with self.lock:
            return rng.sample(self.uids, min(n, len(self.uids))) if self.uids else []

    def new_tag(self) -> str:
        with self.lock:
            self.tag_seq += 1
            return f"crash-tag-{self.tag_seq}"

    def new_source_file(self, rng: random.Random) -> Path:
        with self.lock:
            self.file_seq += 1
            n = self.file_seq
        ext = rng.choice([".png", ".bin", ".wav", ".safetensors", ".txt"])
        path = self.src_dir / f"src-{n:05d}{ext}"
        path.write_bytes(make_content(ext, rng))
        with self.lock:
            self.sources.append(path)
        return path

    def duplicate_source_file(self, rng: random.Random) -> Path | None:
        with self.lock:
            if not self.sources:
                return None
            original = rng.choice(self.sources)
            self.file_seq += 1
            copy = self.src_dir / f"dup-{self.file_seq:05d}{original.suffix}"
        shutil.copyfile(original, copy)
        return copy

    def candidates_to_apply(self, rng: random.Random) -> list[str]:
        staged = [r["job_id"] for r in self.view.rows(
            "SELECT job_id FROM ingest_jobs WHERE status = 'staged' ORDER BY seq DESC LIMIT 20")]
        return rng.sample(staged, min(len(staged), rng.randint(1, 5))) if staged else []

    # -- the run
    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[crash {time.strftime('%H:%M:%S')}] {text}", flush=True)

    def setup(self) -> None:
        from fakes.provider_server import CIVITAI_CDN_HOST, CIVITAI_OLD_VERSION_ID, FakeProviders, Payload

        self.fp = FakeProviders().start()
        self.remote_urls: list[tuple[str, str]] = [
            ("civitai", self.fp.civitai_model_page()),
            ("civitai", self.fp.civitai_model_page(CIVITAI_OLD_VERSION_ID)),
            ("huggingface", self.fp.hf_resolve_url()),
            ("huggingface", self.fp.hf_resolve_url("images/preview-01.png")),
        ]
        for i in range(GENERIC_FILES):
            size = self.rng.randint(50_000, 1_500_000)
            payload = Payload(seed=f"crash generic {i} {self.seed}\n".encode(), size=size, filename=f"g{i}.bin")
            self.remote_urls.append(("generic", self.fp.add_file(f"g{i}.bin", payload)))
        for i in range(SLOW_FILES):  # downloads that take ~1 s: kills land mid-download, then resume
            payload = Payload(seed=f"crash slow {i} {self.seed}\n".encode(), size=1_200_000, filename=f"s{i}.bin")
            self.remote_urls.append(("generic", self.fp.add_file(f"slow-{i}.bin", payload)))
        self.fp.inject("civitai_cdn", "/files/slow-*", "slow", times=None, chunk=64 * 1024, delay=0.05)
        self.receiver = relkit.WebhookReceiver()
        config = relkit.deep_merge(relkit.HARNESS_CONFIG, self.fp.config_patch())
        config = relkit.deep_merge(config, {"ingest": {"extra_allowed_hosts": [CIVITAI_CDN_HOST]}})
        self.env = {"CIVITAI_API_TOKEN": self.fp.civitai_token, "HF_TOKEN": self.fp.hf_token}
        self.server = relkit.start_server(self.root, config, env=self.env)
        self.ws = workspace(self.root / "workspace")
        self.view = relkit.WorkspaceView(self.ws)
        self.src_dir = self.ws.root / "sources"
        self.src_dir.mkdir(exist_ok=True)
        resp = httpx.post(self.server.url("api/modder/hooks/webhooks"), headers=self.server.headers,
                          json={"event": "*", "url": self.receiver.url, "secret": self.receiver.secret}, timeout=30)
        resp.raise_for_status()
        self.webhook = resp.json()
        self.webhook_after = int(self.webhook.get("after_event_id", self.view.last_event_id()))
        self.server_logs: list[str] = []

    def restart(self) -> None:
        self.server_logs.append(self.server.log_text())
        self.server = relkit.restart_server(self.root, env=self.env)

    def settle(self, timeout: float = 120) -> list[dict]:
        """Wait (polling the database only) until no job is queued, downloading or applying and
        no thumbnail is pending: the restarted server must resume all of it by itself."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = self.view.pending_jobs()
            if not pending and not self.view.thumbnails_pending():
                return []
            time.sleep(0.2)
        return self.view.pending_jobs() + ([{"job_id": "(thumbnails)", "status": "pending",
                                             "error": f"{self.view.thumbnails_pending()} thumbnails"}]
                                           if self.view.thumbnails_pending() else [])

    def check(self, cycle: int) -> list[str]:
        stuck = self.settle()
        problems = [f"queue did not resume by itself: {j['job_id']} still {j['status']} ({j.get('error')})"
                    for j in stuck]
        with self.lock:
            acked_jobs, acked_tags = set(self.acked_jobs), {k: set(v) for k, v in self.acked_tags.items()}
        problems += relkit.audit_workspace(self.ws, acked_jobs=acked_jobs, acked_tags=acked_tags,
                                           check_pending=False)
        clean, report = relkit.run_enforcer(self.ws)
        if not clean:
            problems.append(f"enforcer not clean: {json.dumps(report, default=str)[:1500]}")
        if problems:
            self.problems.append({"cycle": cycle, "problems": problems})
            for p in problems[:20]:
                self.log(f"  PROBLEM: {p}")
        return problems

    def refresh_uids(self) -> None:
        for rec in self.view.assets():
            self.add_uid(rec["uid"])

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.setup()
        kills = 0
        cycle = 0
        try:
            while kills < self.kills:
                cycle += 1
                t0 = time.monotonic()
                quick = cycle > 1 and self.rng.random() < 0.15
                if quick:  # kill again while the restarted server is still recovering
                    self.quick_kills += 1
                    time.sleep(self.rng.uniform(0.0, 0.6))
                else:
                    load = Workload(self, self.server, self.rng).start()
                    time.sleep(self.rng.uniform(0.4, 3.0))
                self.kill_event_ids.append(self.view.last_event_id())
                relkit.sigkill(self.server)
                kills += 1
                if not quick:
                    load.stop()
                committed = self.view.last_event_id()
                self.kill_event_ids[-1] = committed
                self.restart()
                if not quick:
                    self.check(cycle)
                    self.refresh_uids()
                self.cycle_seconds.append(time.monotonic() - t0)
                self.log(f"kill {kills}/{self.kills}{' (during recovery)' if quick else ''}: "
                         f"{len(self.acked_jobs)} jobs acked, {len(self.uids)} assets, events <= {committed}")
            self.check(cycle + 1)
            figures = self.finish(started, kills)
        finally:
            self.server_logs.append(self.server.log_text() if self.server else "")
            if self.server and self.server.alive:
                self.server.stop()
            self.receiver.close()
            self.fp.stop()
        return figures

    def finish(self, started: float, kills: int) -> dict[str, Any]:
        """Drain webhooks, then compare deliveries with every event committed before the last kill."""
        must = max(self.kill_event_ids)
        expected = {r["id"] for r in self.view.rows("SELECT id FROM events WHERE id > ? AND id <= ?",
                                                    (self.webhook_after, must))}
        # deliveries go one at a time per webhook: wait while the backlog shrinks; an interrupted
        # delivery waits out its lease (3 x webhook_timeout_s + 30 s) before it is sent again
        drain_started = last_progress = time.monotonic()
        delivered = -1
        while time.monotonic() - last_progress < 120:
            stats = self.receiver.stats(expected)
            if stats["missing"] == 0:
                break
            if stats["delivered"] != delivered:
                delivered, last_progress = stats["delivered"], time.monotonic()
            time.sleep(0.5)
        drain_seconds = time.monotonic() - drain_started
        stats = self.receiver.stats(expected)
        jobs = self.view.jobs()
        logs = "\n".join(self.server_logs)
        figures = {
            "seed": self.seed,
            "kills": kills,
            "kills_during_recovery": self.quick_kills,
            "seconds": round(time.monotonic() - started, 1),
            "cycle_seconds_mean": round(sum(self.cycle_seconds) / max(1, len(self.cycle_seconds)), 2),
            "jobs_acknowledged": len(self.acked_jobs),
            "jobs_acknowledged_by_provider": dict(self.job_kinds),
            "jobs_total": len(jobs),
            "jobs_by_status": dict(Counter(j["status"] for j in jobs.values())),
            "jobs_lost": len(self.acked_jobs - set(jobs)),
            "assets": len(self.view.assets()),
            "tag_edits_acknowledged": self.counters["tag_edits_acked"],
            "events_committed_before_kills": len(expected),
            "webhook_drain_seconds_after_last_kill": round(drain_seconds, 1),
            "webhook": stats,
            "delivery_semantics": "at-least-once (receivers dedupe by X-Comfyvn-Delivery)",
            "http_5xx": len(self.errors),
            "http_5xx_samples": self.errors[:10],
            "http_4xx": {k: v for k, v in self.counters.items() if k.startswith("http_")},
            "server_tracebacks": logs.count("Traceback (most recent call last)"),
            "database_locked_in_logs": logs.count("database is locked"),
            "cycles_with_problems": len(self.problems),
            "problems": self.problems[:20],
        }
        figures["ok"] = (not self.problems and stats["missing"] == 0 and stats["bad_signatures"] == 0
                         and not self.errors and figures["jobs_lost"] == 0
                         and figures["database_locked_in_logs"] == 0)
        return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long", action="store_true", help=f"{LONG_KILLS} kills (default {SHORT_KILLS})")
    ap.add_argument("--kills", type=int, help="number of SIGKILLs (overrides --long)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("COMFYVN_RELIABILITY_SEED", "7")))
    ap.add_argument("--dir", type=Path, help="work folder (default: a temporary folder, removed afterwards)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    kills = args.kills or (LONG_KILLS if args.long else SHORT_KILLS)
    root = args.dir or Path(tempfile.mkdtemp(prefix="comfyvn-crash-"))
    try:
        figures = Harness(root, kills, args.seed, verbose=not args.quiet).run()
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["mode"] = "long" if args.long else "short"
    path = relkit.write_results("reliability_crash" + ("_long" if args.long else ""), figures)
    print(json.dumps(figures, indent=2, default=str))
    print(f"figures written to {path}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
