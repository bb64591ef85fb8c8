"""Remote pull throughput and memory: ``download()`` and the queue vs a plain httpx streamed download.

A fake storage host (``tests.fakes.provider_server``, in its own process so its memory and CPU
are not ours) serves a generated file of ``--mib`` MiB (200 by default, 32 with ``--quick``).
Each round downloads it three times into a temporary folder, in turn:

- baseline: ``httpx.Client.stream("GET")`` + ``iter_raw()`` written to a file, nothing else;
- ``comfyvn.ingest.remote.download()``: allow-list + address check + pinned connection,
  manual redirects, streaming size cap, SHA-256 in the same pass, resume validators, fsync,
  verification against the published hash;
- through the queue, the way users pull: ``enqueue("generic", remote_url=...)`` with the
  published hash and size, the queue's background worker claims, plans, downloads, renames
  into staging and records the job; timed from the enqueue call until the job reads
  ``staged`` (polled every 2 ms); the job is released between rounds.  The staged bytes are
  written behind, as local staging's are (``staged_boot``: apply fsyncs them, or re-hashes
  them after a restart), so this pull does not wait for the disk; ``download()`` alone fsyncs.

Reported: best-of-N MiB/s of each and their ratios to the baseline (the median ratios too, the
median of each round's ratio to the same round's baseline, the
CPU seconds of this process per pull, all threads, and the load average, since other work on a
shared 2-core machine disturbs wall-clock figures), and the peak memory growth
of one download() in a fresh process (peak RSS above the RSS before it, via
``/proc/self/clear_refs``; tracemalloc's Python-heap peak as a second opinion; target < 64 MiB).
Results go to ``bench/results/remote.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from comfyvn.config import init_workspace, update_config, workspace  # noqa: E402
from comfyvn.ingest.queue import AssetIngestQueue  # noqa: E402
from comfyvn.ingest.remote import RemotePlan, download  # noqa: E402

MiB = 1024 * 1024


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def baseline(url: str, host: str, dest: Path) -> int:
    n = 0
    with httpx.Client(trust_env=False, timeout=60) as client, \
            client.stream("GET", url, headers={"Host": host, "Accept-Encoding": "identity"}) as resp, \
            open(dest, "wb", buffering=MiB) as fh:
        resp.raise_for_status()
        for chunk in resp.iter_raw():
            fh.write(chunk)
            n += len(chunk)
    return n


def child_memory(spec: dict) -> None:
    """Run one download() in this fresh process and print its peak RSS growth as JSON."""
    ws = workspace(spec["ws"])
    plan = RemotePlan(provider="civitai", source_url=spec["url"], download_url=spec["url"], filename="bench.bin",
                      expected_sha256=spec["sha256"], expected_size=spec["size"])
    part = Path(spec["dir"]) / "memory.part"
    gc.collect()
    before = _status_kib("VmRSS")
    hwm = _reset_peak_rss()
    download(plan, part, ws=ws, max_bytes=spec["size"] + MiB)
    peak = _status_kib("VmHWM") if hwm else _status_kib("VmRSS")
    part.unlink()
    print(json.dumps({"rss_before_mib": before / 1024, "rss_growth_mib": round(max(0, peak - before) / 1024, 1),
                      "hwm": hwm}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-memory"]:
        child_memory(json.loads(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 MiB, 3 rounds (CI smoke)")
    ap.add_argument("--mib", type=int, default=None, help="file size in MiB (default 200, quick 32)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, quick 3)")
    args = ap.parse_args(argv)
    size = (args.mib or (32 if args.quick else 200)) * MiB
    rounds = args.rounds or (3 if args.quick else 5)

    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.provider_server", "--file", f"bench.bin:{size}"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(server.stdout.readline())
        file_info = info["files"]["bench.bin"]
        tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
        ws = init_workspace(workspace(tmp / "ws"))
        update_config(info["config_patch"], ws)
        url = file_info["url"]  # http://<civitai storage host>/files/bench.bin, mapped to 127.0.0.1
        host = url.split("/")[2]
        direct = f"http://127.0.0.1:{info['ports']['civitai_cdn']}/files/bench.bin"
        plan = RemotePlan(provider="civitai", source_url=url, download_url=url, filename="bench.bin",
                          expected_sha256=file_info["sha256"], expected_size=size)

        update_config({"ingest": {"extra_allowed_hosts": [host], "rate_limit_rps": 1000,
                                   "rate_limit_burst": 100}}, ws)
        queue = AssetIngestQueue(ws, start_worker=True)
        cpu: dict[str, list[float]] = {"baseline": [], "download": [], "queue": []}

        def run_remote() -> float:
            part = tmp / "remote.part"
            part.unlink(missing_ok=True)
            c, t = time.process_time(), time.perf_counter()
            sha, n = download(plan, part, ws=ws, max_bytes=size + MiB)
            dt = time.perf_counter() - t
            cpu["download"].append(time.process_time() - c)
            assert (sha, n) == (file_info["sha256"], size), "download() returned the wrong file"
            part.unlink()
            return dt

        def run_queue() -> float:
            c, t = time.process_time(), time.perf_counter()
            job_id = queue.enqueue("generic", {"sha256": file_info["sha256"], "size": size}, remote_url=url,
                                   terms_acknowledged=True)["job_id"]
            while (status := queue.db.query_one("SELECT status FROM ingest_jobs WHERE job_id = ?",
                                                (job_id,))[0]) in ("queued", "downloading"):
                time.sleep(0.002)
            dt = time.perf_counter() - t
            cpu["queue"].append(time.process_time() - c)
            job = queue.get(job_id)
            assert status == "staged" and (job["digest"], job["bytes"]) == (file_info["sha256"], size), job
            queue.release(job_id)
            return dt

        def run_base() -> float:
            dest = tmp / "base.bin"
            c, t = time.process_time(), time.perf_counter()
            n = baseline(direct, host, dest)
            dt = time.perf_counter() - t
            cpu["baseline"].append(time.process_time() - c)
            assert n == size
            dest.unlink()
            return dt

        load_before = os.getloadavg()[0]
        run_base()  # warm every path (imports, page cache, server)
        run_remote()
        run_queue()
        cpu = {"baseline": [], "download": [], "queue": []}
        base_t, remote_t, queue_t = [], [], []
        for _ in range(rounds):
            base_t.append(run_base())
            remote_t.append(run_remote())
            queue_t.append(run_queue())
        queue.stop_worker()

        # Memory: one download() in a fresh process, so earlier rounds cannot hide its growth.
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-memory",
                                json.dumps({"ws": str(ws.root), "url": url, "sha256": file_info["sha256"],
                                            "size": size, "dir": str(tmp)})],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        mem = json.loads(child.stdout.strip().splitlines()[-1])
        rss_growth_mib = mem["rss_growth_mib"]
        have_hwm = mem["hwm"]

        tracemalloc.start()
        run_remote()
        _cur, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # Best-of-N is the figure least disturbed by other load on a shared 2-core machine.
        base_mibs = size / MiB / min(base_t)
        remote_mibs = size / MiB / min(remote_t)
        queue_mibs = size / MiB / min(queue_t)
        cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
        result = {
            "bench": "remote",
            "quick": args.quick,
            "size_mib": size // MiB,
            "rounds": rounds,
            "baseline_httpx_stream_mib_s": round(base_mibs, 1),
            "download_mib_s": round(remote_mibs, 1),
            "queue_mib_s": round(queue_mibs, 1),
            "throughput_ratio": round(remote_mibs / base_mibs, 3),
            "throughput_ratio_median": round(statistics.median(base_t) / statistics.median(remote_t), 3),
            "queue_throughput_ratio": round(queue_mibs / base_mibs, 3),
            "queue_throughput_ratio_median": round(statistics.median(base_t) / statistics.median(queue_t), 3),
            # each round against the same round's baseline (steadier than best-of when the load swings)
            "throughput_ratio_paired_median": round(statistics.median(b / r for b, r in zip(base_t, remote_t,
                                                                                            strict=True)), 3),
            "queue_throughput_ratio_paired_median": round(statistics.median(b / q for b, q in zip(base_t, queue_t,
                                                                                                  strict=True)), 3),
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
            # CPU seconds of this process (all threads) per pull: less disturbed by other load
            "cpu_s_baseline_median": round(cpu_median["baseline"], 3),
            "cpu_s_download_median": round(cpu_median["download"], 3),
            "cpu_s_queue_median": round(cpu_median["queue"], 3),
            "cpu_ratio_download_over_baseline": round(cpu_median["download"] / cpu_median["baseline"], 3),
            "cpu_ratio_queue_over_baseline": round(cpu_median["queue"] / cpu_median["baseline"], 3),
            "peak_rss_growth_mib": round(rss_growth_mib, 1),
            "peak_rss_method": "VmHWM after clear_refs" if have_hwm else "VmRSS after (no peak reset)",
            "tracemalloc_peak_mib": round(py_peak / MiB, 2),
            "target_memory_mib_max": 64,
            "memory_ok": rss_growth_mib < 64,
            "times_s": {"baseline": [round(x, 3) for x in base_t], "download": [round(x, 3) for x in remote_t],
                        "queue": [round(x, 3) for x in queue_t]},
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=10)

    out = ROOT / "bench" / "results" / "remote.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"remote pull of {result['size_mib']} MiB: download() {result['download_mib_s']} MiB/s vs plain httpx "
          f"stream {result['baseline_httpx_stream_mib_s']} MiB/s -> ratio {result['throughput_ratio']} (median "
          f"{result['throughput_ratio_median']}, paired rounds {result['throughput_ratio_paired_median']}, CPU "
          f"{result['cpu_ratio_download_over_baseline']}x); through the queue {result['queue_mib_s']} MiB/s -> ratio "
          f"{result['queue_throughput_ratio']} (median {result['queue_throughput_ratio_median']}, paired rounds "
          f"{result['queue_throughput_ratio_paired_median']}, CPU {result['cpu_ratio_queue_over_baseline']}x); "
          f"load {result['load_average_1m']}; peak memory "
          f"growth {result['peak_rss_growth_mib']} MiB RSS ({result['tracemalloc_peak_mib']} MiB Python heap); "
          f"wrote {out.relative_to(ROOT)}")
    return 0 if result["memory_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
