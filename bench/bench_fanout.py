"""Event fan-out and API throughput against a real ``jupyter server`` process.

1. **Fan-out**: one producer *process* commits ``on_modder_test`` events into the workspace
   database through ``emit()`` (one transaction per event) at ``--rate`` events/s (1,000) for
   ``--seconds``; ``--clients`` (20) WebSocket clients, spread over ``--client-procs`` processes,
   subscribe to ``/api/modder/hooks/ws`` and time each event from just before its commit to its
   arrival.  The clients are minimal frame readers by default, so they cost little next to the
   server (``--client-impl websockets`` uses the asyncio ``websockets`` library instead).  Reported: p50/p90/p99/max latency, the producer's achieved rate, and lost or
   duplicated events (every client must get every event exactly once, in order).  The
   baseline is the same run with one client: the ratio shows what fanning out to 20 costs.
   Target: p99 < 100 ms with no event lost.
2. **HTTP**: ``GET /api/ingest/status`` and ``GET /assets`` requests/s at ``--concurrency`` (16)
   concurrent httpx async clients (spread over ``--http-procs`` processes so the client is not
   the bottleneck), against Jupyter's own ``GET /api/status`` as the baseline (same server,
   same clients, same concurrency); ``GET /assets`` once more while another process commits
   500 events/s (so its page cache cannot answer); the server's CPU per request beside each.
   ``--http-rounds`` repeats the routes in interleaved rounds (the baseline in each round; ratios
   to the same round's baseline, median and best).  ``--http-only`` skips the fan-out.

The server, the producer and each client process run in their own sessions, as separate
programs do (on a shared machine the kernel's per-session fair share would otherwise cap the
whole bench at one program's share).  ``--quick`` runs a short smoke version.  Results:
``bench/results/fanout.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import selectors
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fanout.json"
TOPIC = "on_modder_test"
WRITES_PER_S = 500.0  # commits a second beside the "assets_while_writing" run


# ---------------------------------------------------------------------------- producer process
def produce(ws_root: str, rate: float, count: int, go: mp.Event, out: mp.Queue) -> None:
    """Commit ``count`` events at ``rate``/s, one transaction each (runs in its own process)."""
    from comfyvn.config import workspace
    from comfyvn.hooks import emit
    from comfyvn.store import get_database

    os.setsid()
    db = get_database(workspace(ws_root).db_path)
    go.wait()
    ids = []
    start = time.perf_counter()
    late = 0
    for i in range(count):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        elif pause < -0.01:
            late += 1
        with db.transaction() as conn:
            ids.append(emit(conn, TOPIC, {"message": "bench", "seq": i, "t": time.time()})["id"])
    elapsed = time.perf_counter() - start
    out.put({"ids": ids, "elapsed": elapsed, "late": late})


# ---------------------------------------------------------------------------- client processes
async def _client(url: str, token: str, after: int, count: int, ready: mp.Queue, idle: float) -> dict:
    from websockets.asyncio.client import connect

    lat: list[float] = []
    ids: list[int] = []
    async with connect(f"{url}?topics={TOPIC}&last_event_id={after}", max_queue=None,
                       additional_headers={"Authorization": f"token {token}"}, open_timeout=30) as ws:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if msg.get("type") == "ack":
                break
        ready.put(1)
        while len(ids) < count:
            try:
                raw = await asyncio.wait_for(ws.recv(), idle if ids else 60)  # idle counts from the first event
            except TimeoutError:
                break  # nothing for a while: whatever is missing is lost
            now = time.time()
            msg = json.loads(raw)
            if msg.get("type") != "event":
                continue
            ids.append(msg["id"])
            lat.append(now - msg["data"]["t"])
    return {"ids": ids, "lat": lat}


class RawSocket:
    """A minimal WebSocket reader (RFC 6455) for the bench: it only subscribes (query parameters),
    answers pings and reads text frames, so the client costs little next to the server."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.sock.sendall((f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: token {token}\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.sock.setblocking(False)

    def messages(self) -> list[bytes]:
        """Complete text messages in the buffer (control frames handled here)."""
        out, buf, pos = [], self.buf, 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            payload = buf[pos + head:pos + head + n]
            pos += head + n
            opcode = b0 & 0x0F
            if opcode == 0x1:
                out.append(payload)
            elif opcode == 0x9:  # ping -> masked pong
                mask = os.urandom(4)
                masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                self.sock.setblocking(True)
                self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                self.sock.setblocking(False)
            elif opcode == 0x8:
                raise ConnectionError("closed by the server")
        self.buf = buf[pos:]
        return out


def raw_clients_proc(url: str, token: str, n: int, after: int, count: int, ready: mp.Queue, out: mp.Queue,
                     idle: float) -> None:
    """``n`` raw sockets in one thread (selectors): subscribe, then time every event."""
    os.setsid()
    sockets = [RawSocket(f"{url}?topics={TOPIC}&last_event_id={after}", token) for _ in range(n)]
    sel = selectors.DefaultSelector()
    state = []
    for i, ws in enumerate(sockets):
        sel.register(ws.sock, selectors.EVENT_READ, i)
        state.append({"ids": [], "lat": [], "acked": False})
    acked = 0
    cpu0 = t0 = None
    while True:
        if acked == n and cpu0 is None:
            cpu0, t0 = time.process_time(), time.perf_counter()
        if all(len(st["ids"]) >= count for st in state):
            break
        # the idle limit starts with the first event: a producer that starts late is not a loss
        started = acked == n and any(st["ids"] for st in state)
        ready_keys = sel.select(timeout=idle if started else 60)
        if not ready_keys:
            break  # nothing for a while: whatever is missing is lost
        for key, _ in ready_keys:
            ws, st = sockets[key.data], state[key.data]
            chunk = ws.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed the socket")
            ws.buf += chunk
            now = time.time()
            for raw in ws.messages():
                msg = json.loads(raw)
                kind = msg.get("type")
                if kind == "ack" and not st["acked"]:
                    st["acked"] = True
                    acked += 1
                    ready.put(1)
                elif kind == "event":
                    st["ids"].append(msg["id"])
                    st["lat"].append(now - msg["data"]["t"])
    share = (time.process_time() - cpu0) / (time.perf_counter() - t0) if cpu0 is not None else 0.0
    for ws in sockets:
        ws.sock.close()
    out.put([{**st, "proc_cpu": share} for st in state])


def clients_proc(url: str, token: str, n: int, after: int, count: int, ready: mp.Queue, out: mp.Queue,
                 idle: float) -> None:
    """``n`` clients of the ``websockets`` library (asyncio), as a typical Python subscriber."""
    async def main() -> list[dict]:
        return await asyncio.gather(*(_client(url, token, after, count, ready, idle) for _ in range(n)))

    os.setsid()
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = asyncio.run(main())
    share = (time.process_time() - cpu0) / (time.perf_counter() - t0)
    out.put([{**r, "proc_cpu": share} for r in results])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fanout(server, *, clients: int, procs: int, rate: float, seconds: float, client_impl: str = "raw") -> dict:
    """One fan-out run: ``clients`` sockets, one producer process."""
    from comfyvn.store import get_database

    count = int(rate * seconds)
    after = int(get_database(server.ws.db_path).query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0])
    ctx = mp.get_context("spawn")
    ready, out, produced = ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = max(1, min(procs, clients))
    split = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    url = server.ws_url("api/modder/hooks/ws")
    target = raw_clients_proc if client_impl == "raw" else clients_proc
    workers = [ctx.Process(target=target, args=(url, server.token, n, after, count, ready, out, 10.0))
               for n in split]
    producer = ctx.Process(target=produce, args=(str(server.ws.root), rate, count, go, produced))
    for p in (*workers, producer):
        p.start()
    for _ in range(clients):
        ready.get(timeout=120)
    cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
    go.set()
    prod = produced.get(timeout=seconds * 10 + 120)
    results = [r for _ in workers for r in out.get(timeout=seconds * 10 + 120)]
    server_cpu = (cpu_seconds(server.proc.pid) - cpu0) / (time.perf_counter() - t0)
    for p in (*workers, producer):
        p.join(timeout=30)
    expected = prod["ids"]
    lat = [x for r in results for x in r["lat"]]
    lost = sum(len(set(expected) - set(r["ids"])) for r in results)
    dups = sum(len(r["ids"]) - len(set(r["ids"])) for r in results)
    in_order = all(r["ids"] == sorted(r["ids"]) for r in results)
    return {
        "clients": clients, "client_processes": procs, "client_impl": client_impl, "events": count, "rate_target": rate,
        "rate_achieved": round(count / prod["elapsed"], 1), "producer_late_events": prod["late"],
        "messages_received": len(lat), "messages_expected": count * clients, "lost": lost, "duplicates": dups,
        "in_order": in_order,
        "latency_ms": {k: round(pct(lat, p) * 1000, 2) for k, p in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "latency_mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None,
        "server_cpu_cores": round(server_cpu, 2),  # CPU the jupyter server used while the run lasted
        "client_proc_cpu_cores": sorted({round(r["proc_cpu"], 2) for r in results}),
        "loadavg_after": os.getloadavg()[0],
    }


# ---------------------------------------------------------------------------- HTTP throughput
async def _hammer(url: str, headers: dict, concurrency: int, until: float) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        for _ in range(3):  # warm the connections and the handler
            (await client.get(url)).raise_for_status()
        done, errors, lat = 0, 0, []

        async def worker() -> None:
            nonlocal done, errors
            while time.time() < until:
                t0 = time.perf_counter()
                resp = await client.get(url)
                if time.time() > until:
                    break  # finished after the window: not counted
                lat.append(time.perf_counter() - t0)
                if resp.status_code == 200:
                    done += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": done, "errors": errors, "lat": lat}


def hammer_proc(url: str, headers: dict, concurrency: int, start: float, until: float, out: mp.Queue) -> None:
    os.setsid()
    time.sleep(max(0.0, start - time.time()))
    out.put(asyncio.run(_hammer(url, headers, concurrency, until)))


def http_route(server, path: str, *, concurrency: int, seconds: float, procs: int, writes_per_s: float = 0) -> dict:
    """``concurrency`` concurrent requests in a loop for ``seconds``, spread over ``procs`` processes;
    ``writes_per_s``: meanwhile another process commits that many events a second (each commit
    changes the database, so cached answers go stale)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    split = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    start = time.time() + 3.0  # every process imports and connects before the clock starts
    until = start + seconds
    workers = [ctx.Process(target=hammer_proc, args=(server.url(path), server.headers, n, start, until, out))
               for n in split]
    writer, go, written = None, ctx.Event(), ctx.Queue()
    if writes_per_s:
        writer = ctx.Process(target=produce, args=(str(server.ws.root), writes_per_s, int(writes_per_s * seconds),
                                                   go, written))
        writer.start()
    for w in workers:
        w.start()
    time.sleep(max(0.0, start - time.time()))
    go.set()
    cpu0 = cpu_seconds(server.proc.pid)
    parts = [out.get(timeout=seconds + 120) for _ in workers]
    server_cpu = (cpu_seconds(server.proc.pid) - cpu0) / max(1e-9, time.time() - start)
    for w in workers:
        w.join(timeout=30)
    if writer is not None:
        written.get(timeout=seconds + 120)
        writer.join(timeout=30)
    lat = [x for part in parts for x in part["lat"]]
    done = sum(part["requests"] for part in parts)
    return {"rps": round(done / seconds, 1), "requests": done, "errors": sum(part["errors"] for part in parts),
            "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2),
            "server_cpu_cores": round(server_cpu, 2),
            # CPU of the server process per answered request: less disturbed by other load than req/s
            "server_cpu_ms_per_request": round(server_cpu * seconds / max(1, done) * 1000, 3)}


HTTP_ROUTES = (("baseline_api_status", "api/status"), ("ingest_status", "api/ingest/status"), ("assets", "assets"))
MEASURED = ("ingest_status", "assets", "assets_while_writing")


def http_throughput(server, *, concurrency: int, seconds: float, procs: int, rounds: int = 1) -> dict:
    """``rounds`` interleaved rounds of every route (the baseline in each); per route the round
    with the median req/s is reported, and the ratios to the same round's baseline as median and best."""
    out: dict = {"concurrency": concurrency, "client_processes": procs, "seconds_per_route": seconds,
                 "rounds": rounds}
    runs: dict[str, list[dict]] = {name: [] for name, _ in HTTP_ROUTES}
    runs["assets_while_writing"] = []
    for _ in range(rounds):
        for name, path in HTTP_ROUTES:
            runs[name].append({**http_route(server, path, concurrency=concurrency, seconds=seconds, procs=procs),
                               "loadavg_1m": round(os.getloadavg()[0], 2)})
        # the same /assets page while another process commits: answers cannot come from the page cache
        runs["assets_while_writing"].append({
            **http_route(server, "assets", concurrency=concurrency, seconds=seconds, procs=procs,
                         writes_per_s=WRITES_PER_S), "writes_per_s": WRITES_PER_S,
            "loadavg_1m": round(os.getloadavg()[0], 2)})
    for name, results in runs.items():
        out[name] = sorted(results, key=lambda r: r["rps"])[len(results) // 2]  # the median round
        out[name]["rounds_rps"] = [r["rps"] for r in results]
        out[name]["rounds_cpu_ms_per_request"] = [r["server_cpu_ms_per_request"] for r in results]
    base = runs["baseline_api_status"]
    ratios = {k: [r["rps"] / (b["rps"] or float("nan")) for r, b in zip(runs[k], base, strict=True)] for k in MEASURED}
    cpu = {k: [r["server_cpu_ms_per_request"] / (b["server_cpu_ms_per_request"] or float("nan"))
               for r, b in zip(runs[k], base, strict=True)] for k in MEASURED}
    out["ratio_vs_baseline"] = {k: round(statistics.median(v), 3) for k, v in ratios.items()}
    out["ratio_vs_baseline_best"] = {k: round(max(v), 3) for k, v in ratios.items()}
    out["ratio_vs_baseline_rounds"] = {k: [round(x, 3) for x in v] for k, v in ratios.items()}
    out["server_cpu_per_request_vs_baseline"] = {k: round(statistics.median(v), 2) for k, v in cpu.items()}
    return out


# ---------------------------------------------------------------------------- setup
def seed(ws, *, assets: int, jobs: int) -> None:
    """Give the listing routes something to list: registered assets and staged ingest jobs."""
    from comfyvn.ingest.queue import AssetIngestQueue
    from comfyvn.studio.core.asset_registry import AssetRegistry

    src = ws.root / "seed"
    src.mkdir(exist_ok=True)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    for i in range(assets):
        f = src / f"asset_{i:04d}.bin"
        f.write_bytes(f"asset {i}".encode() * 8)
        reg.register_file(f, "models", tags=["bench", f"t{i % 7}"], license_tag="CC0-1.0")
    queue = AssetIngestQueue(ws)
    for i in range(jobs):
        f = src / f"job_{i:04d}.bin"
        f.write_bytes(f"job {i}".encode() * 8)
        queue.enqueue("local", source_path=str(f), asset_type_hint="models")


def http_only(server, args: argparse.Namespace, http_seconds: float) -> int:
    load_before = os.getloadavg()[0]
    http = http_throughput(server, concurrency=args.concurrency, seconds=http_seconds,
                           procs=max(1, min(args.http_procs, args.concurrency)), rounds=args.http_rounds)
    report = {"bench": "fanout_http", "quick": args.quick, "http": http,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for k in ("baseline_api_status", "ingest_status", "assets", "assets_while_writing"):
        print(f"  GET {k}: {http[k]['rps']} req/s (p99 {http[k]['p99_ms']} ms, errors {http[k]['errors']}, "
              f"server cpu {http[k]['server_cpu_cores']} cores, {http[k]['server_cpu_ms_per_request']} ms/request)",
              flush=True)
    ratio, best = http["ratio_vs_baseline"], http["ratio_vs_baseline_best"]
    print(f"ingest/status {ratio['ingest_status']}x (best {best['ingest_status']}x) and /assets {ratio['assets']}x "
          f"(best {best['assets']}x; {ratio['assets_while_writing']}x while another process writes) the /api/status "
          f"baseline, medians of {http['rounds']} interleaved rounds (load {report['machine']['loadavg_1m']}; "
          f"server CPU per request vs the baseline's {http['server_cpu_per_request_vs_baseline']}) -> {args.out}")
    return 1 if any(http[k]["errors"] for k in ("baseline_api_status", "ingest_status", "assets")) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=None, help="fan-out duration (default 10, quick 2)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--client-procs", type=int, default=2, help="processes the WebSocket clients run in")
    parser.add_argument("--client-impl", choices=["raw", "websockets"], default="raw",
                        help="raw: a minimal frame reader (measures the server); websockets: the asyncio "
                             "client library, as a typical Python subscriber (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--http-procs", type=int, default=2, help="processes the HTTP clients run in")
    parser.add_argument("--http-seconds", type=float, default=None, help="per route (default 5, quick 2)")
    parser.add_argument("--http-rounds", type=int, default=1,
                        help="interleaved rounds of the HTTP routes, the baseline in each (default %(default)s)")
    parser.add_argument("--http-only", action="store_true",
                        help="measure only the HTTP routes (skip the fan-out; results go to fanout_http.json)")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra jupyter server command-line argument (repeatable)")
    parser.add_argument("--server-config", type=Path, default=None,
                        help="a jupyter_server_config.py for the server (e.g. to try a patch)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.out = args.out or (RESULTS.with_name("fanout_http.json") if args.http_only else RESULTS)
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    http_seconds = args.http_seconds or (2.0 if args.quick else 5.0)

    from live_server import live_server_context

    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-fanout-") as tmp:
        config = {"features": {"enable_asset_ingest": True}}
        with live_server_context(Path(tmp), config=config, extra_args=tuple(args.server_arg),
                                 new_session=True, python_config=args.server_config.read_text()
                                 if args.server_config else None) as server:
            seed(server.ws, assets=40 if args.quick else 200, jobs=10 if args.quick else 50)
            if args.http_only:
                return http_only(server, args, http_seconds)
            print(f"server {server.base_url} ready; fan-out {args.rate:g} ev/s for {seconds:g} s", flush=True)
            baseline = fanout(server, clients=1, procs=1, rate=args.rate, seconds=seconds,
                              client_impl=args.client_impl)
            print(f"  1 client : {json.dumps(baseline['latency_ms'])} lost={baseline['lost']}", flush=True)
            fan = fanout(server, clients=args.clients, procs=args.client_procs, rate=args.rate, seconds=seconds,
                         client_impl=args.client_impl)
            print(f"  {args.clients} clients: {json.dumps(fan['latency_ms'])} lost={fan['lost']} "
                  f"dups={fan['duplicates']} rate={fan['rate_achieved']} server cpu={fan['server_cpu_cores']} "
                  f"client cpu={fan['client_proc_cpu_cores']} load={fan['loadavg_after']}", flush=True)
            http = http_throughput(server, concurrency=args.concurrency, seconds=http_seconds,
                                   procs=max(1, min(args.http_procs, args.concurrency)), rounds=args.http_rounds)
            for k in ("baseline_api_status", "ingest_status", "assets"):
                print(f"  GET {k}: {http[k]['rps']} req/s (p99 {http[k]['p99_ms']} ms, errors {http[k]['errors']}, "
                      f"server cpu {http[k]['server_cpu_cores']})", flush=True)
    p99 = fan["latency_ms"]["p99"]
    report = {
        "bench": "fanout", "quick": args.quick, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                                            "loadavg": os.getloadavg()},
        "fanout": fan, "fanout_baseline_1_client": baseline,
        "ratio_p99_fanout_vs_1_client": round(p99 / baseline["latency_ms"]["p99"], 3)
        if baseline["latency_ms"]["p99"] else None,
        "target": {"p99_ms": 100, "met": p99 < 100 and fan["lost"] == 0},
        "http": http,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"p99 {p99} ms (target < 100 ms: {'met' if report['target']['met'] else 'MISSED'}); "
          f"ingest/status {http['ratio_vs_baseline']['ingest_status']}x and /assets "
          f"{http['ratio_vs_baseline']['assets']}x the /api/status baseline -> {args.out}")
    lost = fan["lost"] + baseline["lost"] + fan["duplicates"] + baseline["duplicates"]
    return 1 if lost or not (fan["in_order"] and baseline["in_order"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
