"""Event fan-out across three ``jupyter server`` processes on one PostgreSQL store.

``--producers`` (1) producer *processes* commit ``on_modder_test`` events through ``emit()``
(``--events-per-tx``, 1, per transaction) at ``--rate`` events/s (1,000) in all for ``--seconds``; ``--clients`` (20) WebSocket
clients are spread over three servers that share one PostgreSQL database (each server's bus
learns of new events by ``LISTEN/NOTIFY`` and reads them from the log).  Each event is timed
from just before its commit to its arrival at each client.  Reported per run: p50/p90/p99/max
latency, lost, duplicated and out-of-order events (every client must get every event exactly
once, in id order).  Target: p99 < 150 ms, 0 lost.

The baseline, measured in the same run and interleaved round by round: the same producer,
rate and clients against one server on the embedded SQLite store.  Several rounds; medians
(and best) with the 1-minute load beside each.  ``--quick`` runs a short smoke version.
Results: ``bench/results/fanout_pg.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_fanout import TOPIC, cpu_seconds, pct, raw_clients_proc  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fanout_pg.json"
SERVERS = 3


def _open_store(ws_root: str, store_url: str | None):
    """The workspace's configured store (``COMFYVN_STORE_URL`` when given)."""
    if store_url:
        os.environ["COMFYVN_STORE_URL"] = store_url
    from comfyvn.config import workspace
    from comfyvn.store import open_store

    return open_store(workspace(ws_root))


def produce(ws_root: str, store_url: str | None, rate: float, count: int, part: int, parts: int, per_tx: int,
            go: mp.Event, out: mp.Queue) -> None:
    """Commit this producer's share of ``count`` events on the schedule of ``rate``/s, ``per_tx``
    events per transaction (runs in its own process; ``parts`` producers share the work)."""
    from comfyvn.hooks.events import emit_many

    os.setsid()
    db = _open_store(ws_root, store_url)
    go.wait()
    ids = []
    start, cpu0 = time.perf_counter(), time.process_time()
    late = 0
    for i in range(part * per_tx, count, parts * per_tx):
        due = start + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        elif pause < -0.01:
            late += 1
        with db.transaction() as conn:
            now = time.time()
            ids.extend(env["id"] for env in emit_many(conn, [(TOPIC, {"message": "bench", "seq": j, "t": now})
                                                             for j in range(i, min(i + per_tx, count))]))
    out.put({"ids": ids, "elapsed": time.perf_counter() - start, "late": late, "cpu": time.process_time() - cpu0})


def last_id(ws_root: str, store_url: str | None) -> int:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:  # a child: this process never sets COMFYVN_STORE_URL for the next run
        return pool.apply(_last_id, (ws_root, store_url))


def _last_id(ws_root: str, store_url: str | None) -> int:
    return int(_open_store(ws_root, store_url).query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0])


def postgres_pids(datadir: Path) -> list[int]:
    """The postmaster of a cluster and its children (backends, walwriter...)."""
    postmaster = int((datadir / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # a backend that ended during the run (its time is lost: a lower bound)
    return total


def fanout(servers: list, store_url: str | None, *, clients: int, rate: float, seconds: float,
           producers: int, per_tx: int = 1, datadir: Path | None = None) -> dict:
    """One run: ``clients`` raw WebSocket readers spread over ``servers`` (one process per third
    of them, the same split whatever the number of servers), ``producers`` producer processes."""
    count = int(rate * seconds)
    after = last_id(str(servers[0].ws.root), store_url)
    ctx = mp.get_context("spawn")
    ready, out, produced = ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    split = [clients // SERVERS + (1 if i < clients % SERVERS else 0) for i in range(SERVERS)]
    workers = [ctx.Process(target=raw_clients_proc,
                           args=(servers[i % len(servers)].ws_url("api/modder/hooks/ws"), servers[i % len(servers)].token,
                                 n, after, count, ready, out, 10.0)) for i, n in enumerate(split)]
    makers = [ctx.Process(target=produce, args=(str(servers[0].ws.root), store_url, rate, count, part, producers,
                                                per_tx, go, produced)) for part in range(producers)]
    for p in (*workers, *makers):
        p.start()
    for _ in range(clients):
        ready.get(timeout=120)
    cpu0 = [cpu_seconds(s.proc.pid) for s in servers]
    pg_pids = postgres_pids(datadir) if datadir else []
    pg_cpu0 = _cpu(pg_pids)
    t0 = time.perf_counter()
    go.set()
    parts = [produced.get(timeout=seconds * 10 + 120) for _ in makers]
    prod = {"ids": [i for part in parts for i in part["ids"]], "elapsed": max(part["elapsed"] for part in parts),
            "late": sum(part["late"] for part in parts), "cpu": sum(part["cpu"] for part in parts)}
    results = [r for _ in workers for r in out.get(timeout=seconds * 10 + 120)]
    wall = time.perf_counter() - t0
    server_cpu = sum(cpu_seconds(s.proc.pid) - c for s, c in zip(servers, cpu0, strict=True)) / wall
    pg_cpu = (_cpu(pg_pids) - pg_cpu0) / wall
    for p in (*workers, *makers):
        p.join(timeout=30)
    expected = set(prod["ids"])
    lat = [x for r in results for x in r["lat"]]
    return {
        "servers": len(servers), "clients": clients, "producers": producers, "events_per_transaction": per_tx,
        "events": count,
        "rate_achieved": round(count / prod["elapsed"], 1), "producer_late_events": prod["late"],
        "messages_received": len(lat), "messages_expected": count * clients,
        "lost": sum(len(expected - set(r["ids"])) for r in results),
        "duplicates": sum(len(r["ids"]) - len(set(r["ids"])) for r in results),
        "out_of_order": sum(sum(1 for a, b in zip(r["ids"], r["ids"][1:], strict=False) if b < a) for r in results),
        "latency_ms": {k: round(pct(lat, p) * 1000, 2) for k, p in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "servers_cpu_cores": round(server_cpu, 2), "postgres_cpu_cores": round(pg_cpu, 2),
        "producer_cpu_ms_per_event": round(prod["cpu"] / count * 1000, 3),
        "loadavg_1m": os.getloadavg()[0],
    }


def summary(runs: list[dict]) -> dict:
    def med(key: str) -> float:
        return round(statistics.median(r["latency_ms"][key] for r in runs), 2)

    return {"rounds": len(runs), "p50_ms_median": med("p50"), "p99_ms_median": med("p99"),
            "p99_ms_best": min(r["latency_ms"]["p99"] for r in runs),
            "servers_cpu_cores_median": round(statistics.median(r["servers_cpu_cores"] for r in runs), 2),
            "lost": sum(r["lost"] for r in runs), "duplicates": sum(r["duplicates"] for r in runs),
            "out_of_order": sum(r["out_of_order"] for r in runs),
            "loadavg_1m": [r["loadavg_1m"] for r in runs]}


def _line(label: str, run: dict) -> str:
    return (f"  {label}: {json.dumps(run['latency_ms'])} lost={run['lost']} dups={run['duplicates']} "
            f"ooo={run['out_of_order']} rate={run['rate_achieved']} cpu={run['servers_cpu_cores']} "
            f"pg cpu={run['postgres_cpu_cores']} producer ms/ev={run['producer_cpu_ms_per_event']} "
            f"load={run['loadavg_1m']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (1 round of 2 s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=None, help="per run (default 5, quick 2)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--events-per-tx", type=int, default=1, help="events each transaction commits")
    parser.add_argument("--producers", type=int, default=1,
                        help="producer processes sharing the rate (several processes write, as on a team's store)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.out = args.out or (RESULTS if args.events_per_tx == 1 else
                            RESULTS.with_name(f"fanout_pg_{args.events_per_tx}_per_tx.json"))
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)

    from live_server import start_live_server
    from pgserver import start_cluster

    config = {"features": {"enable_asset_ingest": True}}
    runs: dict[str, list[dict]] = {"sqlite_1_server": [], "postgresql_3_servers": []}
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-fanout-pg-") as tmp, ExitStack() as stack:
        cluster = start_cluster()
        stack.callback(cluster.destroy)
        url = cluster.create_database()
        sqlite_server = start_live_server(Path(tmp) / "sqlite", config=config, new_session=True)
        stack.callback(sqlite_server.stop)
        pg_servers = []
        for i in range(SERVERS):
            server = start_live_server(Path(tmp) / f"pg{i}", config=config, new_session=True,
                                       env={"COMFYVN_STORE_URL": url})
            stack.callback(server.stop)
            pg_servers.append(server)
        print(f"fan-out {args.rate:g} ev/s for {seconds:g} s to {args.clients} clients, {rounds} rounds", flush=True)
        for r in range(rounds):
            run = fanout([sqlite_server], None, clients=args.clients, rate=args.rate, seconds=seconds,
                         producers=args.producers, per_tx=args.events_per_tx)
            runs["sqlite_1_server"].append(run)
            print(_line(f"round {r + 1} SQLite, 1 server    ", run), flush=True)
            run = fanout(pg_servers, url, clients=args.clients, rate=args.rate, seconds=seconds,
                         producers=args.producers, per_tx=args.events_per_tx, datadir=cluster.datadir)
            runs["postgresql_3_servers"].append(run)
            print(_line(f"round {r + 1} PostgreSQL, 3 servers", run), flush=True)
    report = {
        "bench": "fanout_pg", "quick": args.quick, "rate": args.rate, "seconds": seconds, "clients": args.clients,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "summary": {k: summary(v) for k, v in runs.items()}, "runs": runs,
    }
    pg = report["summary"]["postgresql_3_servers"]
    report["target"] = {"p99_ms": 150, "met": pg["p99_ms_median"] < 150 and pg["lost"] == 0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for k, s in report["summary"].items():
        print(f"{k}: p50 {s['p50_ms_median']} ms, p99 {s['p99_ms_median']} ms (best {s['p99_ms_best']}), "
              f"lost {s['lost']}, dups {s['duplicates']}, out of order {s['out_of_order']}, "
              f"server cpu {s['servers_cpu_cores_median']} cores")
    print(f"target p99 < 150 ms and 0 lost: {'met' if report['target']['met'] else 'MISSED'} -> {args.out}")
    bad = sum(s["lost"] + s["duplicates"] + s["out_of_order"] for s in report["summary"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
