"""Asset registry benchmarks (figures go to bench/results/registry.json).

1. Registering N small files (no thumbnails) against a baseline measured in the same run:
   copy + SHA-256 + one JSON file per file.  Rounds interleave the methods on equal slices of
   the files (in shuffled order), so all see the same disk and machine load; wall time and
   this process's CPU time are both recorded.
   * all N files with ``registry.fsync = false`` against the baseline (neither fsyncs);
   * N/10 files with the default ``registry.fsync = true`` (a copy's bytes and directory entry
     reach the disk before its row commits) against the baseline and against a baseline that
     fsyncs its copies too (the like-for-like comparison).
2. ``list_assets`` with a type + tag + licence filter, a page of 50, on M assets (rows seeded
   with direct SQL in the registry's own schema, no ANALYZE): p50/p95/max in ms for first
   pages and for the next page through the keyset cursor.

    python bench/bench_registry.py            # 10,000 files / 100,000 assets
    python bench/bench_registry.py --quick    # 1,000 files / 10,000 assets (CI smoke run)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from comfyvn.config import init_workspace, update_config, workspace  # noqa: E402
from comfyvn.fsutil import fsync_dir  # noqa: E402
from comfyvn.studio.core.asset_registry import AssetRegistry  # noqa: E402

TYPES = ["sprites", "backgrounds", "audio", "models", "docs"]
LICENCES = ["cc0", "cc-by-4.0", "cc-by-sa-4.0", "mit", None]
TAGS = [f"tag{i:02d}" for i in range(60)]


# ------------------------------------------------------------------------------ registration
def make_sources(folder: Path, n: int, rng: random.Random) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"asset_{i:06d}.bin"
        path.write_bytes(rng.randbytes(rng.randint(512, 4096)))
        paths.append(path)
    return paths


def baseline(files: list[Path], dest: Path, *, durable: bool) -> None:
    """What a script without a registry does: copy, hash, write a JSON sidecar."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in files:
        target = dest / src.name
        shutil.copyfile(src, target)
        if durable:
            with open(target, "rb+") as fh:
                os.fsync(fh.fileno())
            fsync_dir(dest)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        doc = {"uid": digest[:16], "path": str(target), "hash": digest, "bytes": target.stat().st_size,
               "tags": [], "license": None}
        (dest / (src.name + ".json")).write_text(json.dumps(doc, indent=2))


def new_registry(root: Path, *, fsync: bool) -> AssetRegistry:
    ws = init_workspace(workspace(root))
    update_config({"registry": {"fsync": fsync}}, ws)
    return AssetRegistry("bench", ws=ws, make_thumbnails=False)


def _interleaved(runners: dict, files: list[Path], rounds: int, rng: random.Random) -> tuple[dict, dict]:
    """Run every runner on the same slices of ``files``, in shuffled order per round;
    returns (wall seconds, CPU seconds of this process) per runner."""
    slices = [files[i::rounds] for i in range(rounds)]
    wall, cpu = dict.fromkeys(runners, 0.0), dict.fromkeys(runners, 0.0)
    order = list(runners)
    for i, chunk in enumerate(slices):
        rng.shuffle(order)  # no method always runs first (or last) in a round
        for name in order:
            start, start_cpu = time.perf_counter(), time.process_time()
            runners[name](chunk, i)
            wall[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    return wall, cpu


def bench_register(n: int, n_fsync: int, rounds: int, work: Path, rng: random.Random) -> dict:
    files = make_sources(work / "sources", n, rng)
    fast = new_registry(work / "ws_nofsync", fsync=False)
    durable = new_registry(work / "ws_default", fsync=True)
    # 1) no fsync on either side: what the registry adds to copy + hash + JSON
    wall, cpu = _interleaved({
        "baseline": lambda chunk, i: baseline(chunk, work / "baseline" / str(i), durable=False),
        "registry_no_fsync": lambda chunk, i: [fast.register_file(p, "models") for p in chunk],
    }, files, rounds, rng)
    # 2) the default setting (copies fsynced before their rows commit) on a slice of the files,
    #    against the naive baseline and one that fsyncs its copies too
    sample = files[:n_fsync]
    wall2, cpu2 = _interleaved({
        "baseline": lambda chunk, i: baseline(chunk, work / "baseline2" / str(i), durable=False),
        "baseline_fsync": lambda chunk, i: baseline(chunk, work / "baseline_fsync" / str(i), durable=True),
        "registry_default": lambda chunk, i: [durable.register_file(p, "models") for p in chunk],
    }, sample, rounds, rng)
    assert fast.count() == n and durable.count() == n_fsync
    ms = lambda seconds, count: round(seconds / count * 1000, 4)  # noqa: E731
    return {
        "files": n, "files_fsync_phase": n_fsync, "rounds": rounds, "file_bytes": "512-4096 random",
        "no_fsync": {"ms_per_file": {k: ms(v, n) for k, v in wall.items()},
                     "cpu_ms_per_file": {k: ms(v, n) for k, v in cpu.items()},
                     "ratio": round(wall["registry_no_fsync"] / wall["baseline"], 2),
                     "cpu_ratio": round(cpu["registry_no_fsync"] / cpu["baseline"], 2)},
        "default": {"ms_per_file": {k: ms(v, n_fsync) for k, v in wall2.items()},
                    "cpu_ms_per_file": {k: ms(v, n_fsync) for k, v in cpu2.items()},
                    "ratio_vs_baseline": round(wall2["registry_default"] / wall2["baseline"], 2),
                    "ratio_vs_baseline_fsync": round(wall2["registry_default"] / wall2["baseline_fsync"], 2)},
        "target": "registry <= 2x baseline",
    }


# ------------------------------------------------------------------------------ queries
def seed_rows(reg: AssetRegistry, m: int, rng: random.Random) -> None:
    """M rows in the registry's schema (as register_file would write them), in one transaction."""
    now = time.time() - m
    rows, tag_rows = [], []
    weights = [1 / (i + 1) for i in range(len(TAGS))]  # a few common tags, a long tail
    for i in range(m):
        digest = hashlib.sha256(f"asset {i}".encode()).hexdigest()
        uid, kind = digest[:16], rng.choice(TYPES)
        tags = sorted(set(rng.choices(TAGS, weights, k=rng.randint(1, 4))))
        rec = {"uid": uid, "type": kind, "path": f"{kind}/asset_{i:06d}.bin", "hash": digest,
               "bytes": rng.randint(512, 10_000_000), "tags": tags, "license": rng.choice(LICENCES),
               "origin": "local", "version": 1, "created_at": now + i, "updated_at": now + i,
               "meta": {"title": f"Asset {i}"}, "preview": {"kind": None}, "provenance": {"source": "bench"}}
        rows.append((reg.project_id, uid, kind, rec["path"], digest, rec["bytes"], json.dumps(tags), rec["license"],
                     "local", 1, rec["created_at"], rec["updated_at"], json.dumps(rec["meta"]),
                     json.dumps(rec["preview"]), json.dumps(rec["provenance"]), AssetRegistry._search_text(rec)))
        tag_rows.extend((reg.project_id, uid, t) for t in tags)
    with reg.db.transaction() as conn:
        conn.executemany(
            "INSERT INTO assets(project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at,"
            " updated_at, meta, preview, provenance, search_text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO asset_tags(project_id, uid, tag) VALUES (?,?,?)", tag_rows)
    # no ANALYZE: a registry grown by register_file has no statistics either


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def bench_queries(m: int, queries: int, work: Path, rng: random.Random) -> dict:
    reg = new_registry(work / "ws_query", fsync=True)
    start = time.perf_counter()
    seed_rows(reg, m, rng)
    seeded_s = time.perf_counter() - start
    combos = [(rng.choice(TYPES), rng.choice(TAGS[:30]), rng.choice(LICENCES[:4])) for _ in range(queries)]
    for kind, tag, lic in combos[:20]:  # warm the page cache
        reg.list_assets(kind, tags=[tag], license=lic, limit=50)
    first, following, sizes, cpu = [], [], [], []
    for kind, tag, lic in combos:
        t0, c0 = time.perf_counter(), time.process_time()
        page = reg.query_assets(asset_type=kind, tags=[tag], license=lic, limit=50)
        first.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
        sizes.append(len(page["items"]))
        if page["next_cursor"]:
            t0 = time.perf_counter()
            reg.query_assets(asset_type=kind, tags=[tag], license=lic, limit=50, cursor=page["next_cursor"])
            following.append((time.perf_counter() - t0) * 1000)

    def stats(values: list[float]) -> dict:
        return {"n": len(values), "p50_ms": round(statistics.median(values), 3),
                "p95_ms": round(percentile(values, 0.95), 3), "max_ms": round(max(values), 3)} if values else {}

    return {"assets": m, "seed_seconds": round(seeded_s, 2), "filter": "type + tag + licence, page of 50",
            "first_page": stats(first), "next_page": stats(following), "first_page_cpu": stats(cpu),
            "avg_items_per_page": round(statistics.mean(sizes), 1),
            "full_pages": sum(1 for s in sizes if s == 50), "target": "p95 < 20 ms"}


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 files / 10,000 assets")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--assets", type=int, default=None)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "results" / "registry.json"))
    args = ap.parse_args(argv)
    n = args.files or (1_000 if args.quick else 10_000)
    m = args.assets or (10_000 if args.quick else 100_000)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-") as tmp:
        work = Path(tmp)
        register = bench_register(n, max(100, n // 10), rounds=10, work=work, rng=rng)
        queries = bench_queries(m, args.queries, work, rng)
    result = {"bench": "registry", "quick": args.quick, "python": platform.python_version(),
              "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
              "register": register, "list_assets": queries}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    r, q = register, queries
    nf, df = r["no_fsync"], r["default"]
    print(f"register {n} files, registry.fsync=false vs copy+sha256+JSON: {nf['ratio']}x wall "
          f"({nf['ms_per_file']['registry_no_fsync']} vs {nf['ms_per_file']['baseline']} ms/file), "
          f"{nf['cpu_ratio']}x CPU (target <= 2x)")
    print(f"register {r['files_fsync_phase']} files, default registry.fsync=true: {df['ratio_vs_baseline']}x the "
          f"baseline, {df['ratio_vs_baseline_fsync']}x a baseline that fsyncs its copies "
          f"({df['ms_per_file']['registry_default']} vs {df['ms_per_file']['baseline']} / "
          f"{df['ms_per_file']['baseline_fsync']} ms/file)")
    fp = q["first_page"]
    print(f"list_assets on {m} assets, type+tag+licence, page of 50: first page p50 {fp['p50_ms']} ms, "
          f"p95 {fp['p95_ms']} ms, max {fp['max_ms']} ms; next page p95 {q['next_page'].get('p95_ms')} ms "
          f"(target p95 < 20 ms)")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
