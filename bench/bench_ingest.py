"""Local ingest: one big file and many small files through enqueue + apply, against baselines.

1. **Big file** (1 GiB, 64 MiB with ``--quick``): ``enqueue(source_path=...)`` (kernel copy
   into staging, SHA-256 of the landed bytes in the same pass, written behind) + ``apply()``
   (fsync, rename into the registry, row, sidecar) vs the baseline ``cp src dst && openssl dgst -sha256 dst`` (two passes; coreutils
   ``sha256sum`` lacks the SHA instructions here, openssl uses them).  Rounds alternate which
   runs first; the source is in the page cache for both; ``sync`` runs (untimed) between runs so
   one run's write-back does not land in the next.  Target: ratio ours / baseline <= 1.0.
2. **Small files** (5,000 x 2 KiB, 500 with ``--quick``), in interleaved rounds (``--small-rounds``,
   default 5; the order of the first two alternates), each in a fresh workspace:

   - **ours**: per batch of 500 (``--batch``), ``enqueue_many(paths)`` then ``apply(ids)``;
   - **baseline, same durability** (issue 19): per batch, ``shutil.copyfile`` + SHA-256 of the
     copy for each file, one ``syncfs`` of the destination file system + an fsync of its folder,
     then one INSERT per file in one SQLite transaction (WAL, ``synchronous=NORMAL``, the
     workspace database's settings);
   - **one by one** (reference, the path before ``enqueue_many``; skip with ``--no-one-by-one``):
     one ``enqueue()`` per file, then ``apply()`` per 100.

   Reported: files/s (median and best of the rounds), the throughput ratio ours / baseline
   (median of the rounds' ratios), CPU time per file of this process and the CPU ratio, split
   into user (Python's work) and system (the kernel's: file creation above all) time, the
   1-minute load of each round, and the last batch's time over the first (flat as the queue
   and the registry grow).  Targets: ratio >= 0.5 and >= 1,000 files/s.  Each round also
   measures, as a diagnostic, the CPU of creating one new file per file (the baseline's copy)
   and two (ours: staged copy + sidecar), nothing else (:func:`creation_floor`).  Runs are
   deleted only at the end (see the comment in :func:`bench_small`).

The load average is recorded: other work on a shared 2-core machine slows fsync-heavy runs.
Results: ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyvn.config import init_workspace, update_config, workspace  # noqa: E402
from comfyvn.hashing import copy_and_hash_large, sha256_file  # noqa: E402
from comfyvn.ingest import AssetIngestQueue  # noqa: E402

MiB = 1024 * 1024
APPLY_GROUP = 100  # jobs per apply() call in the small-file run


def make_big_file(path: Path, mib: int) -> None:
    block = bytearray(os.urandom(16 * MiB))
    with open(path, "wb") as fh:
        for i in range(0, mib, 16):
            block[:8] = i.to_bytes(8, "little")  # every block differs
            fh.write(block[: min(16, mib - i) * MiB])
    os.sync()


def baseline_big(src: Path, dst: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(["sh", "-c", 'cp "$1" "$2" && openssl dgst -sha256 "$2"', "sh", str(src), str(dst)],
                         check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed, out.strip().rsplit(" ", 1)[-1]


def ours_big(q: AssetIngestQueue, src: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    job = q.enqueue(source_path=src, asset_type_hint="models")
    enqueued = time.perf_counter()
    [applied] = q.apply([job["job_id"]])["applied"]
    elapsed = time.perf_counter() - start
    q.registry().remove_asset(applied["asset_uid"], delete_files=True)  # untimed: next round starts clean
    return elapsed, {"enqueue_s": enqueued - start, "apply_s": elapsed - (enqueued - start),
                     "digest": applied["digest"]}


def python_pipeline(src: Path, dst: Path) -> float:
    """Diagnostic: the copy through Python buffers (read, write, hash in a helper thread) that
    ``copy_and_hash_large`` falls back to without ``copy_file_range`` (a write-only
    destination takes it), without fsync: what the kernel copy saves."""
    start = time.perf_counter()
    with open(dst, "wb") as fh:
        copy_and_hash_large(src, fh, fsync=False)
    elapsed = time.perf_counter() - start
    dst.unlink()
    return elapsed


def bench_big(tmp: Path, mib: int, rounds: int) -> dict:
    ws = init_workspace(workspace(tmp / "ws-big"))
    q = AssetIngestQueue(ws)
    src = ws.root / "source.safetensors"
    make_big_file(src, mib)
    base_times, our_times, parts, python_copy = [], [], [], []
    digest = None
    for r in range(rounds):
        order = ("base", "ours") if r % 2 == 0 else ("ours", "base")
        for which in order:
            if which == "base":
                t, digest_b = baseline_big(src, tmp / "copy.bin")
                base_times.append(t)
                digest = digest or digest_b
            else:
                t, info = ours_big(q, src)
                our_times.append(t)
                parts.append(info)
                assert digest is None or info["digest"] == digest, "digest differs from openssl's"
            os.sync()
        python_copy.append(python_pipeline(src, tmp / "python-copy.bin"))
        os.sync()
    best_ratio = min(our_times) / min(base_times)
    med_ratio = statistics.median(our_times) / statistics.median(base_times)
    return {"mib": mib, "rounds": rounds, "baseline_s": base_times, "ours_s": our_times,
            "ours_enqueue_s": [p["enqueue_s"] for p in parts], "ours_apply_s": [p["apply_s"] for p in parts],
            "baseline_best_mib_s": round(mib / min(base_times), 1), "ours_best_mib_s": round(mib / min(our_times), 1),
            "ratio_best": round(best_ratio, 3), "ratio_median": round(med_ratio, 3), "target_ratio": 1.0,
            "diagnostic_python_pipeline_s": python_copy,
            "diagnostic_python_pipeline_ratio_best": round(min(python_copy) / min(base_times), 3)}


def _syncfs_call():
    """Linux ``syncfs(fd)`` through ctypes, else None (the baseline then calls ``os.sync()``)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).syncfs
        fn.argtypes = [ctypes.c_int]
        return fn
    except (AttributeError, OSError):
        return None


_SYNCFS = _syncfs_call()


def baseline_small(sources: list[Path], dest: Path, db_path: Path, batch: int) -> dict:
    """Same durability, nothing else: per batch, copy each file and SHA-256 the copy, one
    ``syncfs`` of the destination's file system + an fsync of its folder, then one INSERT per
    file in one SQLite transaction (WAL, ``synchronous=NORMAL``: the workspace database's
    settings).  Returns wall, CPU, user and system seconds."""
    dest.mkdir(parents=True)
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE files(path TEXT PRIMARY KEY, sha256 TEXT NOT NULL, bytes INTEGER NOT NULL)")
    start, cpu, times = time.perf_counter(), time.process_time(), os.times()
    folder = os.open(dest, os.O_RDONLY)
    try:
        for first in range(0, len(sources), batch):
            rows = []
            for path in sources[first:first + batch]:
                copy = dest / path.name
                shutil.copyfile(path, copy)
                digest, size = sha256_file(copy)
                rows.append((str(copy), digest, size))
            if _SYNCFS is not None:
                _SYNCFS(folder)
            else:
                os.sync()
            os.fsync(folder)
            db.execute("BEGIN IMMEDIATE")
            for row in rows:
                db.execute("INSERT INTO files(path, sha256, bytes) VALUES (?, ?, ?)", row)
            db.execute("COMMIT")
    finally:
        os.close(folder)
    elapsed, cpu_s, user_s, sys_s = time.perf_counter() - start, time.process_time() - cpu, *_user_sys(times)
    db.close()
    return {"s": elapsed, "cpu_s": cpu_s, "user_s": user_s, "sys_s": sys_s}


def _user_sys(since: os.times_result) -> tuple[float, float]:
    """User and system CPU seconds of this process since ``since`` (Python's work vs the kernel's)."""
    now = os.times()
    return now.user - since.user, now.system - since.system


def creation_floor(folder: Path, n: int, size: int) -> dict:
    """Diagnostic: CPU per file of creating files the way the two paths do, nothing else: one new
    file per file (the baseline's copy) or two (ours: the staged copy, which becomes the asset by
    a hard link, and its sidecar), each written under a temporary name and renamed, no fsync."""
    data = os.urandom(size)
    out = {}
    for per in (1, 2):
        dest = folder / f"floor-{per}"
        dest.mkdir(parents=True)
        cpu, times = time.process_time(), os.times()
        for i in range(n):
            for k in range(per):
                tmp = f"{dest}/.f{i}-{k}.tmp"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                os.write(fd, data if k == 0 else data[:400])  # the second: a sidecar's few hundred bytes
                os.close(fd)
                os.rename(tmp, f"{dest}/f{i}-{k}")
        out[per] = {"cpu_s": time.process_time() - cpu, "sys_s": _user_sys(times)[1]}
    return {"one_file_cpu_s": out[1]["cpu_s"], "two_files_cpu_s": out[2]["cpu_s"],
            "one_file_sys_s": out[1]["sys_s"], "two_files_sys_s": out[2]["sys_s"]}


def fresh_queue(ws_root: Path, sources_dir: Path) -> AssetIngestQueue:
    """The queue of a new workspace that may read the shared source folder."""
    os.environ["COMFYVN_HOME"] = str(ws_root)
    ws = init_workspace(workspace(ws_root))
    update_config({"ingest": {"allowed_source_roots": ["$COMFYVN_HOME", str(sources_dir)]}}, ws)
    return AssetIngestQueue(ws)


def ours_batched(ws_root: Path, sources: list[Path], batch: int) -> dict:
    """The batch path: per batch ``enqueue_many(paths)`` then ``apply(ids)``, in a fresh workspace."""
    q = fresh_queue(ws_root, sources[0].parent)
    enqueue_s = apply_s = 0.0
    per_batch = []
    start, cpu, times = time.perf_counter(), time.process_time(), os.times()
    for first in range(0, len(sources), batch):
        t0 = time.perf_counter()
        staged = q.enqueue_many(sources[first:first + batch])
        t1 = time.perf_counter()
        ids = [job["job_id"] for job in staged["jobs"]]
        result = q.apply(ids)
        t2 = time.perf_counter()
        assert not staged["errors"] and len(result["applied"]) == len(ids) == len(sources[first:first + batch]), (
            staged["errors"][:3], result["failed"][:3])
        enqueue_s, apply_s = enqueue_s + t1 - t0, apply_s + t2 - t1
        per_batch.append(t2 - t0)
    elapsed, cpu_s, user_s, sys_s = time.perf_counter() - start, time.process_time() - cpu, *_user_sys(times)
    assert q.registry().count() == len(sources)
    return {"s": elapsed, "cpu_s": cpu_s, "user_s": user_s, "sys_s": sys_s, "enqueue_s": enqueue_s,
            "apply_s": apply_s, "per_batch_s": per_batch}


def ours_one_by_one(ws_root: Path, sources: list[Path]) -> dict:
    """The path before enqueue_many (reference): one ``enqueue()`` per file, ``apply()`` per 100."""
    q = fresh_queue(ws_root, sources[0].parent)
    start, cpu = time.perf_counter(), time.process_time()
    ids = [q.enqueue(source_path=path)["job_id"] for path in sources]
    enqueued = time.perf_counter()
    for first in range(0, len(ids), APPLY_GROUP):
        assert len(q.apply(ids[first:first + APPLY_GROUP])["applied"]) == len(ids[first:first + APPLY_GROUP])
    elapsed, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    return {"s": elapsed, "cpu_s": cpu_s, "enqueue_s": enqueued - start, "apply_s": elapsed - (enqueued - start)}


def bench_small(tmp: Path, n: int, size: int, batch: int, rounds: int, one_by_one: bool) -> dict:
    src_dir = tmp / "small-sources"
    src_dir.mkdir()
    sources = []
    for i in range(n):
        path = src_dir / f"sprite_{i:05d}.bin"
        path.write_bytes(os.urandom(size))
        sources.append(path)
    os.sync()
    runs: list[dict] = []
    for r in range(rounds):
        order = ["base", "ours", "single"] if r % 2 == 0 else ["ours", "base", "single"]
        row: dict = {"round": r, "load_1min": round(os.getloadavg()[0], 2)}
        for which in order:
            if which == "single" and not one_by_one:
                continue
            work = tmp / f"small-{which}-{r}"
            if which == "base":
                row["base"] = baseline_small(sources, work / "copies", work.with_suffix(".db"), batch)
            elif which == "ours":
                row["ours"] = ours_batched(work, sources, batch)
            else:
                row["single"] = ours_one_by_one(work, sources)
            # untimed: one run's write-back does not land in the next.  Nothing is deleted until the
            # end: this ext4 has no journal, and there a new file's inode allocation skips (scans past)
            # every inode freed in the last seconds, so one run's clean-up would slow the next run's
            # file creations (see BENCHMARKS.md)
            os.sync()
        row["floor"] = creation_floor(tmp / f"floor-{r}", n, size)
        os.sync()
        row["ratio"] = row["base"]["s"] / row["ours"]["s"]  # throughput ours / baseline
        row["cpu_ratio"] = row["base"]["cpu_s"] / row["ours"]["cpu_s"]
        print(f"  round {r}: ours {n / row['ours']['s']:.0f} files/s, baseline {n / row['base']['s']:.0f} files/s, "
              f"ratio {row['ratio']:.2f} (CPU {row['cpu_ratio']:.2f}); CPU ms/file user+sys ours "
              f"{row['ours']['user_s'] / n * 1000:.3f}+{row['ours']['sys_s'] / n * 1000:.3f}, baseline "
              f"{row['base']['user_s'] / n * 1000:.3f}+{row['base']['sys_s'] / n * 1000:.3f}; creating one file "
              f"{row['floor']['one_file_cpu_s'] / n * 1000:.3f} ms, two {row['floor']['two_files_cpu_s'] / n * 1000:.3f}"
              + (f", one by one {n / row['single']['s']:.0f} files/s" if "single" in row else "")
              + f"; load {row['load_1min']}", flush=True)
        runs.append(row)

    def rate(key: str, pick) -> float:
        return round(n / pick([row[key]["s"] for row in runs]), 1)

    def ms(key: str, field: str) -> float:
        return round(statistics.median(row[key][field] for row in runs) / n * 1000, 3)

    def cpu_ms(key: str) -> float:
        return ms(key, "cpu_s")

    out = {
        "files": n, "file_bytes": size, "batch": batch, "rounds": rounds,
        "ours_files_per_s_median": rate("ours", statistics.median), "ours_files_per_s_best": rate("ours", min),
        "baseline_files_per_s_median": rate("base", statistics.median), "baseline_files_per_s_best": rate("base", min),
        "ratio_median": round(statistics.median(row["ratio"] for row in runs), 3),
        "ratio_best_over_best": round(min(row["base"]["s"] for row in runs) / min(row["ours"]["s"] for row in runs), 3),
        "cpu_ratio_median": round(statistics.median(row["cpu_ratio"] for row in runs), 3),
        "ours_cpu_ms_per_file": cpu_ms("ours"), "baseline_cpu_ms_per_file": cpu_ms("base"),
        "ours_user_ms_per_file": ms("ours", "user_s"), "ours_sys_ms_per_file": ms("ours", "sys_s"),
        "baseline_user_ms_per_file": ms("base", "user_s"), "baseline_sys_ms_per_file": ms("base", "sys_s"),
        "floor_one_file_cpu_ms": ms("floor", "one_file_cpu_s"), "floor_two_files_cpu_ms": ms("floor", "two_files_cpu_s"),
        "ours_enqueue_files_per_s_median": round(n / statistics.median(row["ours"]["enqueue_s"] for row in runs), 1),
        "ours_apply_files_per_s_median": round(n / statistics.median(row["ours"]["apply_s"] for row in runs), 1),
        # flat as the queue and the registry grow: the last batch's time over the first's (median of rounds)
        "last_batch_over_first": round(statistics.median(
            row["ours"]["per_batch_s"][-1] / row["ours"]["per_batch_s"][0] for row in runs), 3),
        "targets": {"ratio": 0.5, "files_per_s": 1000},
        "runs": runs,
    }
    if one_by_one:
        out["one_by_one_files_per_s_median"] = rate("single", statistics.median)
        out["one_by_one_cpu_ms_per_file"] = cpu_ms("single")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB and 500 files (CI smoke)")
    ap.add_argument("--mib", type=int, default=None, help="big file size in MiB (default 1024, quick 64)")
    ap.add_argument("--files", type=int, default=None, help="small files (default 5000, quick 500)")
    ap.add_argument("--rounds", type=int, default=None, help="big-file rounds (default 3, quick 2)")
    ap.add_argument("--small-rounds", type=int, default=None, help="small-file rounds (default 5, quick 2)")
    ap.add_argument("--batch", type=int, default=500, help="small files per enqueue_many() + apply() (default 500)")
    ap.add_argument("--small-only", action="store_true", help="only the small-file part")
    ap.add_argument("--no-one-by-one", action="store_true", help="skip the one-enqueue()-per-file reference run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args(argv)
    mib = args.mib or (64 if args.quick else 1024)
    files = args.files or (500 if args.quick else 5000)
    rounds = args.rounds or (2 if args.quick else 3)
    small_rounds = args.small_rounds or (2 if args.quick else 5)
    if shutil.which("openssl") is None:
        print("openssl is needed for the baseline", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["COMFYVN_HOME"] = str(tmp / "ws-big")
        if args.small_only:
            big = None
        else:
            big = bench_big(tmp, mib, rounds)
            print(f"big file {mib} MiB: ours {big['ours_best_mib_s']} MiB/s, cp+openssl {big['baseline_best_mib_s']} "
                  f"MiB/s, ratio {big['ratio_best']} (median {big['ratio_median']}; target <= 1.0); copy through "
                  f"Python buffers instead (diagnostic) {big['diagnostic_python_pipeline_ratio_best']}", flush=True)
        small = bench_small(tmp, files, 2048, args.batch, small_rounds, not args.no_one_by_one)
        print(f"{files} small files in batches of {args.batch}: ours {small['ours_files_per_s_median']} files/s "
              f"(best {small['ours_files_per_s_best']}; enqueue {small['ours_enqueue_files_per_s_median']}/s, apply "
              f"{small['ours_apply_files_per_s_median']}/s), baseline {small['baseline_files_per_s_median']} files/s; "
              f"ratio median {small['ratio_median']} (targets >= 0.5 and >= 1000 files/s), CPU ratio "
              f"{small['cpu_ratio_median']} ({small['ours_cpu_ms_per_file']} vs {small['baseline_cpu_ms_per_file']} "
              f"ms/file; user {small['ours_user_ms_per_file']} vs {small['baseline_user_ms_per_file']}, system "
              f"{small['ours_sys_ms_per_file']} vs {small['baseline_sys_ms_per_file']}; creating one file "
              f"{small['floor_one_file_cpu_ms']} ms, two {small['floor_two_files_cpu_ms']}); last/first batch "
              f"{small['last_batch_over_first']}"
              + (f"; one by one {small['one_by_one_files_per_s_median']} files/s" if "one_by_one_files_per_s_median"
                 in small else ""), flush=True)
    result = {"bench": "ingest", "quick": args.quick, "python": platform.python_version(),
              "cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()], "big_file": big, "small_files": small}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
