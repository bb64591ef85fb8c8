"""Server memory under hostile WebSocket clients (issue 11, point 5).

Starts a real ``jupyter server`` with the comfyvn extension, then

1. opens ``--clients`` (200) WebSockets to ``/api/modder/hooks/ws`` that never read, publishes
   ``--events`` (40) events of ~900 KB each through ``POST /api/modder/hooks/test`` and samples
   the server's RSS;
2. closes them and opens ``--replayers`` (10) sockets that replay from event 0 and never read,
   and samples the RSS for ``--replay-seconds`` (5 s);
3. sends 4 concurrent ``GET /api/modder/hooks/history?limit=10000`` while polling ``/api/status``.

Figures (MiB) are printed as JSON and written to ``bench/results/ws_memory.json``.  Run it with
another checkout's Python to measure that code (the server runs from ``sys.executable``'s
environment)::

    python tools/reliability/ws_memory.py
    /work/main/.venv/bin/python tools/reliability/ws_memory.py --out ws_memory_main
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import relkit  # noqa: E402

MIB = 1024 * 1024


def open_ws(server, query: str, rcvbuf: int) -> socket.socket:
    """A WebSocket handshake on a blocking socket; the caller then never reads from it."""
    parts = urlsplit(server.base_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /api/modder/hooks/ws{query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: token {server.token}\r\n\r\n")
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("the server closed the WebSocket handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return sock


def sample(pid: int, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        rss = relkit.rss_bytes(pid)
        if rss:
            out.append(rss / MIB)
        time.sleep(0.1)
    return out


def history_load(server, pid: int, requests: int = 4) -> dict:
    """``requests`` concurrent ``GET /history?limit=10000`` while ``/api/status`` is polled."""
    import threading

    import httpx

    before = relkit.rss_bytes(pid) / MIB
    stop = threading.Event()
    status_ms: list[float] = []
    sizes: list[int] = []

    def poll() -> None:
        with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=60) as c:
            while not stop.is_set():
                t = time.monotonic()
                c.get("api/status")
                status_ms.append((time.monotonic() - t) * 1000)
                time.sleep(0.02)

    def fetch() -> None:
        with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=120) as c:
            sizes.append(len(c.get("api/modder/hooks/history", params={"limit": "10000"}).content))

    poller = threading.Thread(target=poll)
    poller.start()
    peak = [before]
    fetchers = [threading.Thread(target=fetch) for _ in range(requests)]
    for t in fetchers:
        t.start()
    while any(t.is_alive() for t in fetchers):
        peak.append(relkit.rss_bytes(pid) / MIB)
        time.sleep(0.05)
    stop.set()
    poller.join()
    return {"requests": requests, "response_bytes": sizes, "rss_added_mib": round(max(peak) - before),
            "status_max_ms": round(max(status_ms), 1) if status_ms else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--events", type=int, default=40)
    ap.add_argument("--event-kb", type=int, default=900)
    ap.add_argument("--replayers", type=int, default=10)
    ap.add_argument("--replay-seconds", type=float, default=5.0)
    ap.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling after publishing")
    ap.add_argument("--rcvbuf", type=int, default=65536, help="client SO_RCVBUF (kernel buffering per socket)")
    ap.add_argument("--replay-only", action="store_true", help="publish with no client connected, then replay")
    ap.add_argument("--out", default="ws_memory")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = relkit.start_server(Path(tmp), {"hooks": {"history_retention_days": 0}})
        pid = server.proc.pid
        http = server.client()
        try:
            blob = "x" * (args.event_kb * 1000)
            http.request("POST", "api/modder/hooks/test", json_body={"data": {"warmup": True}})
            time.sleep(1)
            base = relkit.rss_bytes(pid) / MIB
            socks = [] if args.replay_only else [open_ws(server, "", args.rcvbuf) for _ in range(args.clients)]
            time.sleep(1)
            connected = relkit.rss_bytes(pid) / MIB
            t0 = time.monotonic()
            for i in range(args.events):
                http.request("POST", "api/modder/hooks/test", json_body={"message": f"big {i}", "data": {"blob": blob}})
            publish_s = time.monotonic() - t0
            live = sample(pid, args.sample_seconds)
            streams = http.request("GET", "api/modder/hooks").json().get("streams")
            for s in socks:
                s.close()
            time.sleep(2)
            after_live = relkit.rss_bytes(pid) / MIB
            replayers = [open_ws(server, "?last_event_id=0", args.rcvbuf) for _ in range(args.replayers)]
            replay = sample(pid, args.replay_seconds)
            replay_streams = http.request("GET", "api/modder/hooks").json().get("streams")
            for s in replayers:
                s.close()
            time.sleep(2)
            history = history_load(server, pid)
        finally:
            server.stop()
    figures = {
        "python": sys.executable, "clients": 0 if args.replay_only else args.clients, "events": args.events, "event_kb": args.event_kb,
        "client_rcvbuf": args.rcvbuf, "rss_mib_baseline": round(base), "rss_mib_connected": round(connected),
        "rss_mib_peak_non_reading": round(max(live)), "rss_mib_end_non_reading": round(live[-1]),
        "publish_seconds": round(publish_s, 2), "streams_after_publish": streams,
        "rss_mib_before_replay": round(after_live), "replayers": args.replayers,
        "rss_mib_peak_replay": round(max(replay)), "replay_added_mib": round(max(replay) - after_live),
        "streams_during_replay": replay_streams, "history": history,
    }
    print(json.dumps(figures, indent=2))
    relkit.write_results(args.out, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
