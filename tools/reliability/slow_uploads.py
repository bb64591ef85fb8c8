"""Hostile slow uploads against a live server: descriptors stay bounded, the server answers.

``N`` clients each open ``POST /assets/upload`` with a large ``Content-Length`` and then send
one byte every ``trickle_s`` seconds.  The server admits ``uploads.max_concurrent`` of them
(the rest: 503 at once, ``Connection: close``) and cuts the admitted ones with 408 once they
fall below ``uploads.min_bytes_per_s``.  Meanwhile the server's open descriptors are sampled
from ``/proc/<pid>/fd`` and ``GET /api/status`` must keep answering.

    python tools/reliability/slow_uploads.py            # 600 clients, the default limit of 8
    python tools/reliability/slow_uploads.py --clients 100 --limit 4

Writes ``bench/results/slow_uploads.json`` (fd count before / peak / after, answers by status).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

SLOW_CONFIG: dict[str, Any] = {
    "uploads": {"max_concurrent": 8, "min_bytes_per_s": 1000, "slow_window_s": 5, "max_seconds": 60},
}


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status(data: bytes) -> int | None:
    line = data.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def run_slow_uploads(server, clients: int, *, declared: int = 100_000, trickle_s: float = 0.5,
                     deadline_s: float = 60.0, sample_s: float = 0.1, settle_s: float = 0.5) -> dict[str, Any]:
    """Drive ``clients`` slow uploads at ``server`` (a ``live_server.LiveServer``); return the figures.

    ``fd_peak`` is the most descriptors seen at any time (connections the server has accepted
    but not answered yet count); ``fd_held`` the most seen once ``settle_s`` passed after the
    last client connected, while the slow bodies are still trickling in."""
    url = urlsplit(server.base_url)
    prefix = url.path.rstrip("/")
    pid = server.proc.pid
    status_client = httpx.Client(base_url=server.base_url, headers=server.headers, timeout=10)
    assert status_client.get("api/status").status_code == 200
    time.sleep(0.5)
    before = fd_count(pid)
    socks: list[socket.socket] = []
    answers: dict[int, bytes] = {}
    sel = selectors.DefaultSelector()
    status_times: list[float] = []

    def check_status() -> None:
        t0 = time.monotonic()
        assert status_client.get("api/status").status_code == 200
        status_times.append(time.monotonic() - t0)

    connecting = time.monotonic()
    for i in range(clients):
        if i % 50 == 49:
            check_status()
        s = socket.create_connection((url.hostname, url.port))
        s.sendall((f"POST {prefix}/assets/upload?filename=slow{i}.bin&asset_type=misc HTTP/1.1\r\n"
                   f"Host: {url.hostname}:{url.port}\r\nAuthorization: token {server.token}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n").encode()
                  + b"x")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        socks.append(s)
        answers[i] = b""
    peak, held, started = before, before, time.monotonic()
    connect_s = started - connecting
    closed: set[int] = set()
    next_trickle = time.monotonic() + trickle_s
    try:
        while len(closed) < clients and time.monotonic() - started < deadline_s:
            for key, _ in sel.select(timeout=sample_s):
                i = key.data
                try:
                    chunk = key.fileobj.recv(65536)  # type: ignore[union-attr]
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                answers[i] += chunk
                if not chunk:
                    sel.unregister(key.fileobj)
                    closed.add(i)
            count = fd_count(pid)
            peak = max(peak, count)
            if time.monotonic() - started >= settle_s:
                held = max(held, count)
            if time.monotonic() >= next_trickle:
                next_trickle += trickle_s
                for i, s in enumerate(socks):
                    if i not in closed:
                        try:
                            s.send(b"x")
                        except OSError:
                            pass
                check_status()
    finally:
        for s in socks:
            s.close()
        sel.close()
    for _ in range(100):  # the server notices the closed sockets
        if fd_count(pid) <= before:
            break
        time.sleep(0.1)
    after = fd_count(pid)
    status_client.close()
    statuses = Counter(_status(answers[i]) for i in range(clients))
    return {"clients": clients, "fd_before": before, "fd_peak": peak, "fd_held": held, "fd_after": after,
            "answers": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
            "unanswered": clients - len(closed), "status_checks": len(status_times),
            "status_max_s": round(max(status_times, default=0.0), 3), "connect_s": round(connect_s, 1),
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    from relkit import RESULTS_DIR, start_server

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=600)
    parser.add_argument("--limit", type=int, default=8, help="uploads.max_concurrent of the server")
    parser.add_argument("--deadline", type=float, default=60.0, help="stop trickling after this many seconds")
    args = parser.parse_args(argv)
    config = json.loads(json.dumps(SLOW_CONFIG))
    config["uploads"]["max_concurrent"] = args.limit
    with tempfile.TemporaryDirectory(prefix="slow-uploads-") as tmp:
        server = start_server(Path(tmp), config)
        try:
            figures = run_slow_uploads(server, args.clients, deadline_s=args.deadline)
            figures["uploads_left"] = sorted(p.name for p in (server.ws.data_dir / "uploads").glob("*"))
        finally:
            server.stop()
    figures["limit"] = args.limit
    print(json.dumps(figures, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "slow_uploads.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
