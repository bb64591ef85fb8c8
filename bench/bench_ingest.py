"""Local ingest: one big file and many small files through enqueue + apply, against baselines.

1. **Big file** (1 GiB, 64 MiB with ``--quick``): ``enqueue(source_path=...)`` (kernel copy
   into staging, SHA-256 of the landed bytes in the same pass, written behind) + ``apply()``
   (fsync, rename into the registry, row, sidecar) vs the baseline ``cp src dst && openssl dgst -sha256 dst`` (two passes; coreutils
   ``sha256sum`` lacks the SHA instructions here, openssl uses them).  Rounds alternate which
   runs first; the source is in the page cache for both; ``sync`` runs (untimed) between runs so
   one run's write-back does not land in the next.  Target: ratio ours / baseline <= 1.0.
2. **Small files** (5,000 x 2 KiB, 500 with ``--quick``): every file enqueued (one call each,
   as a notebook loop does), then the jobs applied 100 at a time (``apply(ids[i:i+100])``: one
   group commit each, and a cost per job for every hundred) while the queue and the registry
   grow.  A job's cost = its enqueue call + its share of its hundred's apply.  Baseline in the
   same run: ``shutil.copyfile`` + ``sha256_file`` of the copy per file.  Targets: >= 300
   files/s for enqueue + apply, and the cost of the last 100 jobs over the first 100 about 1
   (flat as the queue and registry grow; medians, means reported too).

The load average is recorded: other work on a shared 2-core machine slows fsync-heavy runs.
Results: ``bench/results/ingest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comfyvn.config import init_workspace, workspace  # noqa: E402
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


def bench_small(tmp: Path, n: int, size: int) -> dict:
    ws = init_workspace(workspace(tmp / "ws-small"))
    q = AssetIngestQueue(ws)
    src_dir = ws.root / "incoming"
    src_dir.mkdir()
    sources = []
    for i in range(n):
        path = src_dir / f"sprite_{i:05d}.bin"
        path.write_bytes(os.urandom(size))
        sources.append(path)
    os.sync()

    copies = tmp / "baseline-copies"
    copies.mkdir()
    start = time.perf_counter()
    for path in sources:
        dst = copies / path.name
        shutil.copyfile(path, dst)
        sha256_file(dst)
    baseline_s = time.perf_counter() - start
    shutil.rmtree(copies)
    os.sync()

    enqueue_s, apply_s, ids = [], [], []
    cpu_start = time.process_time()
    for path in sources:
        t = time.perf_counter()
        ids.append(q.enqueue(source_path=path)["job_id"])
        enqueue_s.append(time.perf_counter() - t)
    for start in range(0, n, APPLY_GROUP):
        group = ids[start:start + APPLY_GROUP]
        t = time.perf_counter()
        result = q.apply(group)
        elapsed = time.perf_counter() - t
        assert len(result["applied"]) == len(group), result
        apply_s.extend([elapsed / len(group)] * len(group))  # each job's share of its group commit
    cpu_s = time.process_time() - cpu_start
    total_s = sum(enqueue_s) + sum(apply_s)
    per_job = [e + a for e, a in zip(enqueue_s, apply_s, strict=True)]
    k = min(100, n // 5)
    first, last = statistics.mean(per_job[:k]), statistics.mean(per_job[-k:])
    first_med, last_med = statistics.median(per_job[:k]), statistics.median(per_job[-k:])
    tenth = max(n // 10, 1)  # first vs last tenth: several group commits each, less at the mercy of one stall
    first_tenth, last_tenth = statistics.mean(per_job[:tenth]), statistics.mean(per_job[-tenth:])
    assert q.registry().count() == n
    return {
        "files": n, "file_bytes": size, "files_per_s": round(n / total_s, 1),
        "enqueue_files_per_s": round(n / sum(enqueue_s), 1), "apply_files_per_s": round(n / sum(apply_s), 1),
        "baseline_copy_hash_files_per_s": round(n / baseline_s, 1),
        "ratio_throughput_vs_baseline": round((n / total_s) / (n / baseline_s), 3),
        "first_k": k, "first_k_mean_ms": round(first * 1000, 3), "last_k_mean_ms": round(last * 1000, 3),
        "last_over_first": round(last_med / first_med, 3),  # medians: robust to a neighbour's burst
        "last_over_first_mean": round(last / first, 3),
        "first_k_median_ms": round(first_med * 1000, 3), "last_k_median_ms": round(last_med * 1000, 3),
        "median_job_ms": round(statistics.median(per_job) * 1000, 3),
        "first_k_enqueue_ms": round(statistics.mean(enqueue_s[:k]) * 1000, 3),
        "last_k_enqueue_ms": round(statistics.mean(enqueue_s[-k:]) * 1000, 3),
        "first_k_apply_ms": round(statistics.mean(apply_s[:k]) * 1000, 3),
        "last_k_apply_ms": round(statistics.mean(apply_s[-k:]) * 1000, 3),
        "last_tenth_over_first_tenth": round(last_tenth / first_tenth, 3),
        "cpu_ms_per_job": round(cpu_s / n * 1000, 3),  # this process only (fsync waits excluded)
        "cpu_bound_files_per_s": round(n / cpu_s, 1),
        "apply_group": APPLY_GROUP, "target_files_per_s": 300, "target_last_over_first": 1.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB and 500 files (CI smoke)")
    ap.add_argument("--mib", type=int, default=None, help="big file size in MiB (default 1024, quick 64)")
    ap.add_argument("--files", type=int, default=None, help="small files (default 5000, quick 500)")
    ap.add_argument("--rounds", type=int, default=None, help="big-file rounds (default 3, quick 2)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args(argv)
    mib = args.mib or (64 if args.quick else 1024)
    files = args.files or (500 if args.quick else 5000)
    rounds = args.rounds or (2 if args.quick else 3)
    if shutil.which("openssl") is None:
        print("openssl is needed for the baseline", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        os.environ["COMFYVN_HOME"] = str(tmp / "ws-big")
        big = bench_big(tmp, mib, rounds)
        print(f"big file {mib} MiB: ours {big['ours_best_mib_s']} MiB/s, cp+openssl {big['baseline_best_mib_s']} "
              f"MiB/s, ratio {big['ratio_best']} (median {big['ratio_median']}; target <= 1.0); copy through "
              f"Python buffers instead (diagnostic) {big['diagnostic_python_pipeline_ratio_best']}", flush=True)
        os.environ["COMFYVN_HOME"] = str(tmp / "ws-small")
        small = bench_small(tmp, files, 2048)
        print(f"{files} small files: {small['files_per_s']} files/s (enqueue {small['enqueue_files_per_s']}/s, "
              f"apply {small['apply_files_per_s']}/s; baseline copy+hash {small['baseline_copy_hash_files_per_s']}/s); "
              f"last/first 100 {small['last_over_first']}, last/first tenth {small['last_tenth_over_first_tenth']} "
              f"(target >= 300/s, ~1); CPU {small['cpu_ms_per_job']} ms/job",
              flush=True)
    result = {"bench": "ingest", "quick": args.quick, "python": platform.python_version(),
              "cpus": os.cpu_count(), "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()], "big_file": big, "small_files": small}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
