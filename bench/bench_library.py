"""Library scans and bulk identification, against baselines measured in the same run.

1. **Rescan of an unchanged tree** (``--files``, default 100,000 small files in folders of 1,000;
   10,000 with ``--quick``): a first :func:`comfyvn.library.scan.scan_library` registers them all
   in place (reported: files/s), then full rescans (walk, one ``lstat`` per file, one fingerprint
   per folder compared with the last scan's, reconcile) are timed against
   ``find ROOT -printf '%i %s %T@\\n'`` over the same tree.  Every rescan asserts that no file was
   read (the hash cache's counters) and no file row loaded (every folder's fingerprint matched).
   Target: ratio <= 2.
2. **First scan of model-sized files** (``--model-files`` x ``--model-mib``, default 4 x 1024 MiB
   ``.safetensors``; 4 x 64 with ``--quick``) vs ``openssl dgst -sha256`` over the same files (page
   cache warm for both), with the default ``autov3="background"``: the time until every file is
   scanned, registered and findable by every form but AutoV3 (SHA-256, AutoV2, BLAKE3, CRC32,
   AutoV1; target ratio <= 1.2), and the time until AutoV3 is recorded too (the background phase),
   beside its physical floor computed from the digests' single-thread speeds measured in the same
   run.  Diagnostic: the same scan with ``autov3="eager"`` (every form in the one pass).
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
from comfyvn.hashforms import _crc32  # noqa: E402
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
    ours_s, base_s, ours_cpu, base_cpu, loads = [], [], [], [], []
    find_baseline(tree)  # untimed: dentry and inode caches warm for both
    for i in range(rounds):
        for who in (("ours", "find") if i % 2 == 0 else ("find", "ours")):
            loads.append(os.getloadavg()[0])
            if who == "find":
                base_s.append(find_baseline(tree, base_cpu))
                continue
            scanner = Scanner(ws, "default", registry=reg)
            cpu0, t0 = cpu_s(resource.RUSAGE_SELF), time.perf_counter()
            report = scanner.run()
            ours_s.append(time.perf_counter() - t0)
            ours_cpu.append(cpu_s(resource.RUSAGE_SELF) - cpu0)
            assert report.unchanged == n and report.hashed_files == 0 and scanner.cache.counters()["files_read"] == 0
            assert scanner.rows_loaded == 0 and report.folders["compared"] == 0, report.folders
    best = min(ours_s) / min(base_s)
    return {"files": n, "make_tree_s": round(made, 2), "first_scan_s": round(first_s, 2),
            "first_scan_files_per_s": round(n / first_s), "rescan_s": [round(x, 3) for x in ours_s],
            "find_s": [round(x, 3) for x in base_s], "us_per_file_best": round(min(ours_s) / n * 1e6, 2),
            "find_us_per_file_best": round(min(base_s) / n * 1e6, 2), "ratio_best": round(best, 2),
            "ratio_median": round(statistics.median(ours_s) / statistics.median(base_s), 2),
            "cpu_ratio": round(statistics.median(ours_cpu) / statistics.median(base_cpu), 2), "target": 2.0,
            "load_1min": loads}


def digest_speeds(path: Path, mib: int = 256) -> dict:
    """Single-thread CPU speed (GiB/s) of each digest over ``mib`` MiB already in memory."""
    import hashlib

    from blake3 import blake3

    data = memoryview(bytearray(mib * MiB))
    with open(path, "rb") as fh:
        fh.readinto(data)
    out = {}
    for name, fn in (("sha256", lambda: hashlib.sha256(data)), ("blake3", lambda: blake3(data)),
                     ("crc32", lambda: _crc32(data))):
        best = min(_thread_cpu(fn) for _ in range(3))
        out[name] = round(len(data) / best / 1024**3, 2)
    return out


def _thread_cpu(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


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
    speeds = digest_speeds(files[0], min(mib, 256))
    main_s, all_s, base_s, eager_s, main_cpu, all_cpu, base_cpu, eager_cpu, loads = ([] for _ in range(9))
    total = sum(p.stat().st_size for p in files)

    def scan(i: int, mode: str) -> tuple[float, float, float, float]:
        ws = new_workspace(tmp, f"ws-models-{i}-{mode}", [{"name": "models", "path": str(tmp / "models"),
                                                           "layout": "comfyui"}])
        reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
        mark: dict = {}

        def registered(_report) -> None:  # every file registered and findable by every form but AutoV3
            mark["t"], mark["cpu"] = time.perf_counter(), cpu_s(resource.RUSAGE_SELF)

        cpu0, t0 = cpu_s(resource.RUSAGE_SELF), time.perf_counter()
        report = Scanner(ws, "default", registry=reg, autov3=mode).run(then=registered)
        t_all, cpu_all = time.perf_counter(), cpu_s(resource.RUSAGE_SELF)
        assert report.hashed_bytes == total and len(report.registered) == count, report.summary()
        assert report.autov3["pending"] == 0 and report.autov3["files"] == (count if mode == "background" else 0)
        for rec in reg.iter_assets():  # every form resolves, AutoV3 (as Civitai shows it) included
            forms = {r[0]: r[1] for r in reg.db.conn.execute("SELECT form, value FROM hash_aliases WHERE sha256 = ?",
                                                               (rec["hash"],))}
            for form in ("sha256", "autov2", "blake3", "crc32", "autov1", "autov3", "autov3_short"):
                assert reg.find_by_hash(forms[form])["uid"] == rec["uid"], form
        shutil.rmtree(ws.root)
        return mark["t"] - t0, t_all - t0, mark["cpu"] - cpu0, cpu_all - cpu0

    for i in range(rounds):
        for who in (("ours", "openssl") if i % 2 == 0 else ("openssl", "ours")):
            loads.append(os.getloadavg()[0])
            if who == "openssl":
                base_s.append(openssl(files, base_cpu)[0])
                continue
            t_main, t_all, c_main, c_all = scan(i, "background")
            main_s.append(t_main)
            all_s.append(t_all)
            main_cpu.append(c_main)
            all_cpu.append(c_all)
        _, t_eager, _, c_eager = scan(i, "eager")
        eager_s.append(t_eager)
        eager_cpu.append(c_eager)
    sha, b3, crc = (1 / speeds[k] for k in ("sha256", "blake3", "crc32"))  # CPU seconds per GiB
    med_base, med_base_cpu = statistics.median(base_s), statistics.median(base_cpu)

    def ratios(xs: list[float], cpus: list[float]) -> dict:
        return {"s": [round(x, 3) for x in xs], "ratio_best": round(min(xs) / min(base_s), 2),
                "ratio_median": round(statistics.median(xs) / med_base, 2),
                "cpu_ratio": round(statistics.median(cpus) / med_base_cpu, 2)}

    return {"files": count, "mib_each": mib, "openssl_s": [round(x, 3) for x in base_s],
            "openssl_mib_per_s_best": round(total / MiB / min(base_s)), "load_1min": loads,
            "registered_every_form_but_autov3": {**ratios(main_s, main_cpu), "target": 1.2},
            "all_forms_autov3_in_background": ratios(all_s, all_cpu),
            "diagnostic_all_forms_eager_one_pass": ratios(eager_s, eager_cpu),
            "digest_gib_per_s_one_thread": speeds,
            # CPU of each set of digests in units of one SHA-256 (openssl's work), and the wall floor on 2 cores
            "floor": {"cpu_first_phase": round((sha + b3 + crc) / sha, 2),
                      "cpu_all_forms": round((2 * sha + b3 + crc) / sha, 2),
                      "wall_2_cores_first_phase": round(max(sha, b3 + crc) / sha, 2),
                      "wall_2_cores_all_forms": round(max(sha, (2 * sha + b3 + crc) / 2) / sha, 2)}}


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
