"""Library scans and bulk identification, against baselines measured in the same run.

1. **Rescan of an unchanged tree** (``--files``, default 100,000 small files in folders of 1,000;
   10,000 with ``--quick``): a first :func:`comfyvn.library.scan.scan_library` registers them all
   in place (reported: files/s), then full rescans (walk, one ``lstat`` per file, compare with the
   last scan, reconcile) are timed against ``find ROOT -printf '%i %s %T@\\n'`` over the same tree.
   Every rescan asserts that no file was read (the hash cache's counters).  Target: ratio <= 2.
2. **First scan of model-sized files** (``--model-files`` x ``--model-mib``, default 4 x 1024 MiB
   ``.safetensors``; 4 x 64 with ``--quick``): a scan that hashes every form (SHA-256, BLAKE3,
   CRC32, AutoV1, AutoV3) and registers the files, vs ``openssl dgst -sha256`` over the same files
   (page cache warm for both).  Target: ratio <= 1.2.
3. **Identification of 1,000 files** (``--identify``, 100 with ``--quick``) against the local fake
   Civitai (tests/fakes): calls made and seconds, with the rate limit raised so the figure is our
   own cost; at the default pace (0.33 calls/s) the calls alone take calls / 0.33 s.

The load average is recorded (a shared 2-core machine).  Results: ``bench/results/library.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_hashforms import OLD_NS, MiB, cpu_s, find_baseline, make_safetensors, make_tree, openssl  # noqa: E402
from comfyvn.config import init_workspace, update_config, workspace  # noqa: E402
from comfyvn.library.scan import Scanner, scan_library  # noqa: E402
from comfyvn.studio.core.asset_registry import AssetRegistry  # noqa: E402


def new_workspace(tmp: Path, name: str, roots: list[dict]):
    ws = init_workspace(workspace(tmp / name))
    update_config({"library": {"roots": roots}, "registry": {"fsync": False}}, ws)
    return ws


def bench_rescan(tmp: Path, n: int, rounds: int) -> dict:
    tree = tmp / "tree"
    start = time.perf_counter()
    make_tree(tree, n)
    made = time.perf_counter() - start
    ws = new_workspace(tmp, "ws-rescan", [{"name": "tree", "path": str(tree), "layout": "plain"}])
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    start = time.perf_counter()
    first = scan_library(ws=ws, registry=reg)
    first_s = time.perf_counter() - start
    assert len(first.registered) == n, first.summary()
    ours_s, base_s, ours_cpu, base_cpu = [], [], [], []
    for i in range(rounds):
        for who in (("ours", "find") if i % 2 == 0 else ("find", "ours")):
            if who == "find":
                base_s.append(find_baseline(tree, base_cpu))
                continue
            scanner = Scanner(ws, "default", registry=reg)
            cpu0, t0 = cpu_s(resource.RUSAGE_SELF), time.perf_counter()
            report = scanner.run()
            ours_s.append(time.perf_counter() - t0)
            ours_cpu.append(cpu_s(resource.RUSAGE_SELF) - cpu0)
            assert report.unchanged == n and report.hashed_files == 0 and scanner.cache.counters()["files_read"] == 0
    best = min(ours_s) / min(base_s)
    return {"files": n, "make_tree_s": round(made, 2), "first_scan_s": round(first_s, 2),
            "first_scan_files_per_s": round(n / first_s), "rescan_s": [round(x, 3) for x in ours_s],
            "find_s": [round(x, 3) for x in base_s], "us_per_file_best": round(min(ours_s) / n * 1e6, 2),
            "find_us_per_file_best": round(min(base_s) / n * 1e6, 2), "ratio_best": round(best, 2),
            "ratio_median": round(statistics.median(ours_s) / statistics.median(base_s), 2),
            "cpu_ratio": round(statistics.median(ours_cpu) / statistics.median(base_cpu), 2), "target": 2.0}


def bench_models(tmp: Path, count: int, mib: int, rounds: int) -> dict:
    folder = tmp / "models" / "checkpoints"
    folder.mkdir(parents=True)
    files = []
    for i in range(count):
        path = folder / f"model_{i}.safetensors"
        make_safetensors(path, mib)
        os.utime(path, ns=(OLD_NS, OLD_NS))
        files.append(path)
    openssl(files)  # page cache warm for both
    ours_s, base_s, ours_cpu, base_cpu = [], [], [], []
    for i in range(rounds):
        for who in (("ours", "openssl") if i % 2 == 0 else ("openssl", "ours")):
            if who == "openssl":
                base_s.append(openssl(files, base_cpu)[0])
                continue
            ws = new_workspace(tmp, f"ws-models-{i}", [{"name": "models", "path": str(tmp / "models"),
                                                        "layout": "comfyui"}])
            reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
            cpu0, t0 = cpu_s(resource.RUSAGE_SELF), time.perf_counter()
            report = scan_library(ws=ws, registry=reg)
            ours_s.append(time.perf_counter() - t0)
            ours_cpu.append(cpu_s(resource.RUSAGE_SELF) - cpu0)
            assert report.hashed_bytes == count * files[0].stat().st_size and len(report.registered) == count
            shutil.rmtree(ws.root)
    total = sum(p.stat().st_size for p in files)
    return {"files": count, "mib_each": mib, "scan_s": [round(x, 3) for x in ours_s],
            "openssl_s": [round(x, 3) for x in base_s], "scan_mib_per_s_best": round(total / MiB / min(ours_s)),
            "openssl_mib_per_s_best": round(total / MiB / min(base_s)),
            "ratio_best": round(min(ours_s) / min(base_s), 2),
            "ratio_median": round(statistics.median(ours_s) / statistics.median(base_s), 2),
            "cpu_ratio": round(statistics.median(ours_cpu) / statistics.median(base_cpu), 2), "target": 1.2}


def bench_identify(tmp: Path, n: int) -> dict:
    from comfyvn.library.identify import identify_unidentified
    from tests.fakes.provider_server import FakeProviders

    root = tmp / "ident"
    (root / "loras").mkdir(parents=True)
    with FakeProviders() as fp:
        fp.start()
        known = fp.civitai_file(1094417).all_bytes()
        (root / "loras" / "known.safetensors").write_bytes(known)
        for i in range(n - 1):
            (root / "loras" / f"u{i:05d}.safetensors").write_bytes(f"unknown model {i}\n".encode() * 20)
        for p in (root / "loras").iterdir():
            os.utime(p, ns=(OLD_NS, OLD_NS))
        ws = new_workspace(tmp, "ws-ident", [{"name": "ident", "path": str(root), "layout": "comfyui"}])
        fp.configure(ws)
        update_config({"ingest": {"providers": {"civitai": {"rate_limit_rps": 1000, "rate_limit_burst": 10}}}}, ws)
        reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
        scan_library(ws=ws, registry=reg)
        fp.reset()
        t0 = time.perf_counter()
        report = identify_unidentified(reg, previews=False)
        first_s = time.perf_counter() - t0
        posts = len(fp.requests("civitai", "/api/v1/model-versions/by-hash"))
        t0 = time.perf_counter()
        again = identify_unidentified(reg, previews=False)
        again_s = time.perf_counter() - t0
    return {"files": n, "by_hash_calls": posts, "model_calls": report.model_calls, "matched": len(report.matched),
            "not_found": report.not_found, "seconds": round(first_s, 3),
            "default_pace_seconds_for_calls": round((posts + report.model_calls) / 0.33, 1),
            "repeat_calls": again.calls, "repeat_seconds": round(again_s, 3), "one_call_per_file_would_be": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--part", choices=["rescan", "models", "identify"], action="append")
    p.add_argument("--files", type=int, default=None)
    p.add_argument("--model-files", type=int, default=4)
    p.add_argument("--model-mib", type=int, default=None)
    p.add_argument("--identify", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    parts = args.part or ["rescan", "models", "identify"]
    out: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                             "load_before": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="bench-library-") as tmp_name:
        tmp = Path(tmp_name)
        if "rescan" in parts:
            out["rescan"] = bench_rescan(tmp, args.files or (10_000 if args.quick else 100_000), args.rounds)
            print(json.dumps({"rescan": out["rescan"]}), flush=True)
        if "models" in parts:
            out["models"] = bench_models(tmp, args.model_files, args.model_mib or (64 if args.quick else 1024),
                                         args.rounds)
            print(json.dumps({"models": out["models"]}), flush=True)
        if "identify" in parts:
            out["identify"] = bench_identify(tmp, args.identify or (100 if args.quick else 1000))
            print(json.dumps({"identify": out["identify"]}), flush=True)
    out["machine"]["load_after"] = os.getloadavg()
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "library.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
