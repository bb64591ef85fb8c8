"""Load harness: concurrent API clients and WebSocket subscribers against one real server (loopback).

For a bounded time, ``--clients`` threads loop over a read-heavy mix (asset listings and
details, sidecars, ingest status, hook history) with some writes (test events, tag edits),
while ``--subscribers`` WebSocket clients follow ``on_modder_test`` on
``/api/modder/hooks/ws``.  The server's RSS is sampled every second.

Figures: requests, throughput (requests/s), p50/p99 latency overall and per route, errors,
WebSocket events expected/received (none may be missing) and their delivery latency, RSS at
start/middle/end with the least-squares trend of the second half (MiB/min; warm-up excluded).

    python tools/reliability/load_harness.py          # CI: 20 s, 8 clients, 4 subscribers
    python tools/reliability/load_harness.py --long   # 10 minutes, 16 clients, 20 subscribers

Written to ``bench/results/reliability_load.json``; exit 0 when nothing failed or went missing
(and, for ``--long``, the second-half RSS trend stays under 2 MiB/min).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import relkit  # noqa: E402

SHORT = {"seconds": 20, "clients": 8, "subscribers": 4}
LONG = {"seconds": 600, "clients": 16, "subscribers": 20}
SEED_ASSETS = 300
MAX_TREND_MB_PER_MIN = 2.0


def seed_workspace(root: Path, n: int, seed: int) -> None:
    """``n`` registered assets (images and data files) before the server starts."""
    from comfyvn.config import init_workspace, workspace
    from comfyvn.studio.core.asset_registry import AssetRegistry

    ws = init_workspace(workspace(root / "workspace"))
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    src = ws.root / "seed"
    src.mkdir(exist_ok=True)
    rng = random.Random(seed)
    for i in range(n):
        path = src / f"seed-{i:04d}.bin"
        path.write_bytes(rng.randbytes(rng.randint(200, 5000)))
        reg.register_file(path, rng.choice(["images", "audio", "models"]), tags=[f"group-{i % 10}", "load"],
                          metadata={"title": f"seed asset {i}", "n": i})


class Client(threading.Thread):
    def __init__(self, server, uids: list[str], stop: threading.Event, rng: random.Random, sent: list) -> None:
        super().__init__(daemon=True)
        self.server, self.uids, self.stop_event, self.rng, self.sent = server, uids, stop, rng, sent
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []

    def run(self) -> None:
        ops = [("GET /assets", 25), ("GET /assets/{uid}", 20), ("GET /assets/{uid}/sidecar", 10),
               ("GET /api/ingest/status", 15), ("GET /api/modder/hooks/history", 10),
               ("POST /api/modder/hooks/test", 12), ("POST /assets/bulk", 8)]
        names, weights = zip(*ops, strict=True)
        with httpx.Client(base_url=self.server.base_url, headers=self.server.headers, timeout=30) as http:
            n = 0
            while not self.stop_event.is_set():
                op = self.rng.choices(names, weights)[0]
                uid = self.rng.choice(self.uids)
                n += 1
                t0 = time.perf_counter()
                try:
                    if op == "GET /assets":
                        resp = http.get("assets", params={"limit": 50, "tags": f"group-{self.rng.randint(0, 9)}"})
                    elif op == "GET /assets/{uid}":
                        resp = http.get(f"assets/{uid}")
                    elif op == "GET /assets/{uid}/sidecar":
                        resp = http.get(f"assets/{uid}/sidecar")
                    elif op == "GET /api/ingest/status":
                        resp = http.get("api/ingest/status", params={"limit": 20})
                    elif op == "GET /api/modder/hooks/history":
                        resp = http.get("api/modder/hooks/history", params={"limit": 25})
                    elif op == "POST /api/modder/hooks/test":
                        resp = http.post("api/modder/hooks/test", json={"data": {"sent_at": time.time()}})
                        if resp.status_code == 201:
                            self.sent.append(resp.json()["id"])
                    else:
                        resp = http.post("assets/bulk", json={"uids": [uid], "add_tags": [f"load-{n % 50}"]})
                except httpx.HTTPError as exc:
                    self.errors.append(f"{op}: {type(exc).__name__}: {exc}")
                    continue
                self.latency[op].append(time.perf_counter() - t0)
                if not resp.is_success:
                    self.errors.append(f"{op}: HTTP {resp.status_code} {resp.text[:200]}")


class Subscriber(threading.Thread):
    def __init__(self, server, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.server, self.stop_event = server, stop
        self.ids: set[int] = set()
        self.latency: list[float] = []
        self.errors: list[str] = []
        self.ready = threading.Event()

    def run(self) -> None:
        from websockets.sync.client import connect

        url = self.server.ws_url("api/modder/hooks/ws")
        try:
            with connect(url, additional_headers=self.server.headers, open_timeout=30) as sock:
                sock.send(json.dumps({"topics": ["on_modder_test"]}))
                while not self.stop_event.is_set():
                    try:
                        raw = sock.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    msg = json.loads(raw)
                    if msg.get("type") == "ack":
                        self.ready.set()
                    elif msg.get("type") == "event":
                        self.ids.add(msg["id"])
                        sent = (msg.get("data") or {}).get("sent_at")
                        if isinstance(sent, int | float):
                            self.latency.append(time.time() - sent)
                    elif msg.get("type") == "error":
                        self.errors.append(msg.get("message", "?"))
        except Exception as exc:  # noqa: BLE001 - reported as a figure
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.ready.set()


def run(root: Path, seconds: float, clients: int, subscribers: int, seed: int,
        verbose: bool = True, long: bool = False) -> dict[str, Any]:
    def log(text: str) -> None:
        if verbose:
            print(f"[load {time.strftime('%H:%M:%S')}] {text}", flush=True)

    seed_workspace(root, SEED_ASSETS, seed)
    server = relkit.start_server(root, relkit.HARNESS_CONFIG)
    try:
        view = relkit.WorkspaceView(root / "workspace")
        uids = [a["uid"] for a in view.assets()]
        stop_subs, stop_clients = threading.Event(), threading.Event()
        subs = [Subscriber(server, stop_subs) for _ in range(subscribers)]
        for s in subs:
            s.start()
        for s in subs:
            s.ready.wait(30)
        sampler = relkit.RssSampler(server.proc.pid, interval=1.0)
        sent: list[int] = []
        rng = random.Random(seed)
        workers = [Client(server, uids, stop_clients, random.Random(rng.random()), sent) for _ in range(clients)]
        log(f"{clients} clients, {subscribers} subscribers, {seconds:g} s against {server.base_url}")
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        time.sleep(seconds)
        stop_clients.set()
        for w in workers:
            w.join(timeout=60)
        elapsed = time.perf_counter() - t0
        expected = set(sent)
        deadline = time.monotonic() + 20  # let the last events reach every subscriber
        while time.monotonic() < deadline and any(expected - s.ids for s in subs):
            time.sleep(0.1)
        stop_subs.set()
        for s in subs:
            s.join(timeout=10)
        samples = sampler.stop()
    finally:
        server.stop()
    all_lat = [x for w in workers for xs in w.latency.values() for x in xs]
    per_route: dict[str, dict] = {}
    for op in sorted({op for w in workers for op in w.latency}):
        xs = [x for w in workers for x in w.latency.get(op, [])]
        per_route[op] = {"requests": len(xs), "p50_ms": round(relkit.percentile(xs, 0.5) * 1000, 2),
                         "p99_ms": round(relkit.percentile(xs, 0.99) * 1000, 2)}
    ws_lat = [x for s in subs for x in s.latency]
    mb = [b / 2**20 for _, b in samples]
    second_half = samples[len(samples) // 2:]
    errors = [e for w in workers for e in w.errors]
    figures = {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "subscribers": subscribers,
        "seed_assets": SEED_ASSETS,
        "requests": len(all_lat),
        "throughput_rps": round(len(all_lat) / elapsed, 1),
        "p50_ms": round((relkit.percentile(all_lat, 0.5) or 0) * 1000, 2),
        "p99_ms": round((relkit.percentile(all_lat, 0.99) or 0) * 1000, 2),
        "per_route": per_route,
        "errors": len(errors),
        "error_samples": errors[:10],
        "ws_events_sent": len(expected),
        "ws_events_received": sum(len(s.ids & expected) for s in subs),
        "ws_events_missing": sum(len(expected - s.ids) for s in subs),
        "ws_errors": [e for s in subs for e in s.errors][:10],
        "ws_latency_p50_ms": round((relkit.percentile(ws_lat, 0.5) or 0) * 1000, 2),
        "ws_latency_p99_ms": round((relkit.percentile(ws_lat, 0.99) or 0) * 1000, 2),
        "rss_mb": {"start": round(mb[0], 1) if mb else None, "middle": round(mb[len(mb) // 2], 1) if mb else None,
                   "end": round(mb[-1], 1) if mb else None, "max": round(max(mb), 1) if mb else None,
                   "samples": len(mb)},
        "rss_trend_second_half_mb_per_min": (round(t, 3) if (t := relkit.trend_mb_per_min(second_half)) is not None
                                             else None),
        "rss_series_mb": [round(x, 1) for x in mb[:: max(1, len(mb) // 60)]],
    }
    ok = not errors and figures["ws_events_missing"] == 0 and not figures["ws_errors"] and len(expected) > 0
    if long:
        trend = figures["rss_trend_second_half_mb_per_min"]
        ok = ok and trend is not None and trend < MAX_TREND_MB_PER_MIN
    figures["ok"] = ok
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long", action="store_true", help=f"{LONG} (default {SHORT})")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--subscribers", type=int)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("COMFYVN_RELIABILITY_SEED", "7")))
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    base = LONG if args.long else SHORT
    root = args.dir or Path(tempfile.mkdtemp(prefix="comfyvn-load-"))
    try:
        figures = run(root, args.seconds or base["seconds"], args.clients or base["clients"],
                      args.subscribers or base["subscribers"], args.seed, verbose=not args.quiet, long=args.long)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["mode"] = "long" if args.long else "short"
    path = relkit.write_results("reliability_load" + ("_long" if args.long else ""), figures)
    print(json.dumps(figures, indent=2, default=str))
    print(f"figures written to {path}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
