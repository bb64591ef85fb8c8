"""Concurrency harness: four processes write one workspace at once.

* **the server** (a real ``jupyter server``): a harness thread drives it over HTTP;
* **two kernels**: plain Python processes using the core API (``get_ingest_queue``,
  ``AssetRegistry``), as a notebook kernel would (``--kernel N`` runs this file in that role);
* **the enforcer CLI** (``python -m comfyvn.registry.rebuild``), run in a loop, rewriting sidecars.

All of them enqueue the *same* growing pool of contents (identical bytes under different paths),
apply staged jobs and add tags; every writer adds tags nobody else adds.  Afterwards:

* each digest was staged once (one ``staged`` enqueue event per digest, one live job, one asset);
* no tag update is lost (every acknowledged tag is on its asset, in the row and the sidecar);
* no ``database is locked`` (or any other unexpected error) reached a user: not in an HTTP
  answer, not raised in a kernel, not printed by the CLI, not in the server log;
* the workspace passes the crash invariants (files, sidecars, rows) and the enforcer is clean.

    python tools/reliability/concurrency_harness.py           # CI: 30 s
    python tools/reliability/concurrency_harness.py --long    # 5 minutes

Figures go to ``bench/results/reliability_concurrency.json``; exit 0 when everything held.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import relkit  # noqa: E402

SHORT_SECONDS, LONG_SECONDS = 30, 300
NEW_CONTENTS_PER_SECOND = 3  # the shared pool keeps growing, so writers race on fresh bytes all run long
WINDOW = 25  # writers pick among the newest WINDOW contents


def pool_file(ws_root: Path, writer: str, index: int, seed: int) -> Path:
    """Content ``index`` of the shared pool, as ``writer``'s own copy (same bytes for every writer)."""
    path = ws_root / "pool" / writer / f"item-{index:05d}.bin"
    if not path.exists():
        rng = random.Random(f"{seed}-{index}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(rng.randbytes(rng.randint(500, 200_000)))
        os.replace(tmp, path)
    return path


def pick_content(rng: random.Random, t0: float) -> int:
    newest = WINDOW + int((time.time() - t0) * NEW_CONTENTS_PER_SECOND)
    return rng.randint(max(0, newest - WINDOW), newest)


def _is_locked(text: str) -> bool:
    return "database is locked" in text or "database stayed locked" in text


# ---------------------------------------------------------------------------- a kernel process
def kernel_main(writer: str, ws_root: Path, seconds: float, seed: int, out: Path, t0: float) -> int:
    """One kernel-like writer: the core API in this process."""
    from comfyvn.config import workspace
    from comfyvn.ingest.errors import IngestError
    from comfyvn.ingest.queue import get_ingest_queue
    from comfyvn.studio.core.asset_registry import AssetRegistry, AssetRegistryError

    ws = workspace(ws_root)
    queue = get_ingest_queue(ws)
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    rng = random.Random(f"{writer}-{seed}")
    acked: dict[str, list[str]] = {}
    counts: Counter[str] = Counter()
    locked: list[str] = []
    unexpected: list[str] = []
    seq = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op = rng.choices(["enqueue", "apply", "tags", "meta"], [40, 20, 30, 10])[0]
        try:
            if op == "enqueue":
                job = queue.enqueue(source_path=str(pool_file(ws_root, writer, pick_content(rng, t0), seed)))
                counts[f"enqueue_{job['status']}"] += 1
            elif op == "apply":
                staged = [j["job_id"] for j in queue.list_jobs(limit=10, status="staged")]
                result = queue.apply(rng.sample(staged, min(3, len(staged))) if staged else [])
                counts["applied"] += len(result["applied"])
            else:
                uids = [r["uid"] for r in reg.list_assets(limit=200)]
                if not uids:
                    continue
                chosen = rng.sample(uids, min(len(uids), rng.randint(1, 3)))
                seq += 1
                tag = f"{writer}-t{seq}"
                if op == "tags":
                    reg.bulk_update_tags(chosen, add_tags=[tag])
                else:
                    reg.update_asset_meta(chosen[0], {writer: seq}, add_tags=[tag])
                    chosen = chosen[:1]
                for uid in chosen:
                    acked.setdefault(uid, []).append(tag)
                counts["tag_edits"] += 1
        except (IngestError, AssetRegistryError) as exc:  # expected outcomes of racing writers, worded for people
            if _is_locked(str(exc)):
                locked.append(f"{op}: {exc}")
            counts[f"refused_{type(exc).__name__}"] += 1
        except Exception as exc:
            text = f"{op}: {type(exc).__name__}: {exc}"
            (locked if _is_locked(text) else unexpected).append(text + "\n" + traceback.format_exc()[-1500:])
    out.write_text(json.dumps({"writer": writer, "acked_tags": acked, "counts": counts, "locked": locked,
                               "unexpected": unexpected}))
    return 0


# ---------------------------------------------------------------------------- the harness
class ServerWriter(threading.Thread):
    """The server's share of the work, driven over HTTP."""

    def __init__(self, server, ws_root: Path, seconds: float, seed: int, t0: float) -> None:
        super().__init__(name="server-writer", daemon=True)
        self.server, self.ws_root, self.seconds, self.seed, self.t0 = server, ws_root, seconds, seed, t0
        self.rng = random.Random(f"server-{seed}")
        self.acked: dict[str, list[str]] = {}
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    def run(self) -> None:
        import httpx

        seq = 0
        deadline = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.server.base_url, headers=self.server.headers, timeout=60) as http:
            while time.monotonic() < deadline:
                op = self.rng.choices(["enqueue", "apply", "tags"], [40, 20, 40])[0]
                try:
                    if op == "enqueue":
                        path = pool_file(self.ws_root, "server", pick_content(self.rng, self.t0), self.seed)
                        resp = http.post("api/ingest/queue", json={"source_path": str(path)})
                    elif op == "apply":
                        staged = http.get("api/ingest/jobs", params={"status": "staged", "limit": 10})
                        ids = [j["job_id"] for j in staged.json().get("items", [])] if staged.is_success else []
                        resp = http.post("api/ingest/apply", json={"job_ids": self.rng.sample(ids, min(3, len(ids)))}
                                         if ids else {})
                    else:
                        listing = http.get("assets", params={"limit": 200})
                        uids = [a["uid"] for a in listing.json().get("items", [])] if listing.is_success else []
                        if not uids:
                            continue
                        chosen = self.rng.sample(uids, min(len(uids), self.rng.randint(1, 3)))
                        seq += 1
                        tag = f"server-t{seq}"
                        resp = http.post("assets/bulk", json={"uids": chosen, "add_tags": [tag]})
                        if resp.is_success:
                            for uid in chosen:
                                self.acked.setdefault(uid, []).append(tag)
                except httpx.HTTPError as exc:
                    self.errors.append(f"{op}: transport {type(exc).__name__}: {exc}")
                    continue
                self.counts[f"{op}_{resp.status_code}"] += 1
                if resp.status_code >= 500 or _is_locked(resp.text):
                    self.errors.append(f"{op}: HTTP {resp.status_code} {resp.text[:400]}")


def enforcer_loop(ws_root: Path, seconds: float, results: dict) -> None:
    """Run the enforcer CLI (rewriting every sidecar) back to back until time is up."""
    env = dict(os.environ, COMFYVN_HOME=str(ws_root))
    deadline = time.monotonic() + seconds
    runs, failures = 0, []
    while time.monotonic() < deadline:
        proc = subprocess.run([sys.executable, "-m", "comfyvn.registry.rebuild", "--overwrite", "--json"],
                              capture_output=True, text=True, env=env, cwd=ws_root, timeout=300)
        runs += 1
        text = proc.stdout[-3000:] + proc.stderr[-3000:]
        try:
            json.loads(proc.stdout)
            report_ok = True
        except ValueError:
            report_ok = False
        if not report_ok or _is_locked(text) or "Traceback" in proc.stderr:
            failures.append(f"exit {proc.returncode}: {text[-1500:]}")
    results.update(runs=runs, failures=failures)


def run(root: Path, seconds: float, seed: int, verbose: bool = True) -> dict[str, Any]:
    from comfyvn.config import workspace

    def log(text: str) -> None:
        if verbose:
            print(f"[concurrency {time.strftime('%H:%M:%S')}] {text}", flush=True)

    started = time.monotonic()
    server = relkit.start_server(root, relkit.HARNESS_CONFIG)
    ws = workspace(root / "workspace")
    view = relkit.WorkspaceView(ws)
    try:
        t0 = time.time()
        log(f"server up at {server.base_url}; running {seconds:g} s")
        outs = {k: root / f"{k}.json" for k in ("k1", "k2")}
        kernels = {k: subprocess.Popen([sys.executable, __file__, "--kernel", k, "--ws", str(ws.root),
                                        "--seconds", str(seconds), "--seed", str(seed), "--out", str(outs[k]),
                                        "--t0", repr(t0)],
                                       env=dict(os.environ, COMFYVN_HOME=str(ws.root)), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
                   for k in outs}
        writer = ServerWriter(server, ws.root, seconds, seed, t0)
        enforcer: dict = {}
        enforcer_thread = threading.Thread(target=enforcer_loop, args=(ws.root, seconds, enforcer), daemon=True)
        writer.start()
        enforcer_thread.start()
        kernel_output = {k: p.communicate(timeout=seconds + 300)[0] for k, p in kernels.items()}
        writer.join(timeout=seconds + 120)
        enforcer_thread.join(timeout=seconds + 600)
        # final state: let the server finish, then check
        results = {k: json.loads(outs[k].read_text()) if outs[k].exists() else
                   {"writer": k, "acked_tags": {}, "counts": {}, "locked": [],
                    "unexpected": [f"kernel exited {kernels[k].returncode}: {kernel_output[k][-2000:]}"]}
                   for k in outs}
        acked: dict[str, set[str]] = {}
        for source in [writer.acked] + [r["acked_tags"] for r in results.values()]:
            for uid, tags in source.items():
                acked.setdefault(uid, set()).update(tags)
        problems = relkit.audit_workspace(ws, acked_tags=acked, check_pending=False)
        problems += staged_once(view)
        clean, report = relkit.run_enforcer(ws)
        if not clean:
            problems.append(f"enforcer not clean afterwards: {json.dumps(report, default=str)[:1500]}")
        server_log = server.log_text()
        for log_file in sorted(ws.logs_dir.glob("server.log*")):  # every process of the workspace logs here
            server_log += log_file.read_text(errors="replace")
        locked = [t for r in results.values() for t in r["locked"]]
        locked += [e for e in writer.errors if _is_locked(e)] + [f for f in enforcer.get("failures", []) if _is_locked(f)]
        unexpected = [t for r in results.values() for t in r["unexpected"]]
        unexpected += [e for e in writer.errors if not _is_locked(e)]
        unexpected += [f for f in enforcer.get("failures", []) if not _is_locked(f)]
        jobs = view.jobs()
        figures = {
            "seconds": seconds,
            "wall_seconds": round(time.monotonic() - started, 1),
            "processes": {"server": "jupyter server (HTTP)", "kernels": 2, "enforcer_runs": enforcer.get("runs", 0)},
            "writer_counts": {"server": dict(writer.counts), **{k: r["counts"] for k, r in results.items()}},
            "jobs": len(jobs),
            "jobs_by_status": dict(Counter(j["status"] for j in jobs.values())),
            "distinct_digests": len({j["digest"] for j in jobs.values() if j["digest"]}),
            "assets": len(view.assets()),
            "tag_updates_acknowledged": sum(len(v) for v in acked.values()),
            "database_locked_reaching_users": len(locked),
            "database_locked_in_server_log": server_log.count("database is locked"),
            "unexpected_errors": len(unexpected),
            "samples": (locked + unexpected)[:10],
            "problems": problems[:50],
        }
        figures["ok"] = not problems and not locked and not unexpected and figures["database_locked_in_server_log"] == 0
        return figures
    finally:
        server.stop()


def staged_once(view: relkit.WorkspaceView) -> list[str]:
    """Each digest: one ``staged`` enqueue event, at most one live job and at most one asset."""
    problems = []
    staged_events = Counter()
    for row in view.rows("SELECT data FROM events WHERE topic = 'on_asset_ingest_enqueued'"):
        data = json.loads(row["data"])
        if data.get("status") == "staged" and data.get("digest"):
            staged_events[data["digest"]] += 1
    for digest, n in staged_events.items():
        if n > 1:
            problems.append(f"digest {digest[:16]} was staged {n} times")
    live = Counter(j["digest"] for j in view.jobs().values() if j["status"] in ("staged", "applying", "applied"))
    for digest, n in live.items():
        if n > 1:
            problems.append(f"digest {digest[:16]} has {n} staged/applied jobs")
    hashes = Counter(a["hash"] for a in view.assets())
    for digest, n in hashes.items():
        if n > 1:
            problems.append(f"digest {digest[:16]} registered {n} times")
    if not staged_events:
        problems.append("no enqueue event reported a staged job: the workload did not run")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--long", action="store_true", help=f"{LONG_SECONDS} s (default {SHORT_SECONDS} s)")
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("COMFYVN_RELIABILITY_SEED", "7")))
    ap.add_argument("--dir", type=Path)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--kernel", help=argparse.SUPPRESS)
    ap.add_argument("--ws", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    seconds = args.seconds or (LONG_SECONDS if args.long else SHORT_SECONDS)
    if args.kernel:
        return kernel_main(args.kernel, args.ws, seconds, args.seed, args.out, args.t0)
    root = args.dir or Path(tempfile.mkdtemp(prefix="comfyvn-concurrency-"))
    try:
        figures = run(root, seconds, args.seed, verbose=not args.quiet)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["mode"] = "long" if args.long else "short"
    path = relkit.write_results("reliability_concurrency" + ("_long" if args.long else ""), figures)
    print(json.dumps(figures, indent=2, default=str))
    print(f"figures written to {path}")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
