"""Remote pull throughput and memory: ``download()`` and the queue vs a plain httpx streamed download.

A fake storage host (``tests.fakes.provider_server``, in its own process so its memory and CPU
are not ours) serves a generated file of ``--mib`` MiB (200 by default, 32 with ``--quick``).
Each round downloads it four times into a temporary folder, the order rotated every round:

- baseline: a new ``httpx.Client`` + ``stream("GET")`` + ``iter_raw()`` written to a file,
  nothing else (a plain script's download; the client's set-up loads the CA bundle, ~20 ms of CPU);
- baseline_warm: the same through one client kept across pulls (no set-up per pull: the stricter
  baseline, since ``download()`` keeps its TLS context across pulls too);
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
Every pull is also reported against each baseline round by round (``paired``: median and best
of the per-round ratios, and the CPU ratio).  ``--compare-tree DIR`` adds ``other_download`` and
``other_queue``: the same pulls with another checkout's code (e.g. ``git archive <commit>``
unpacked), from a child process, in the same rounds: a same-run A/B.
Results go to ``bench/results/remote.json``.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the tree whose comfyvn is measured: this one, or another checkout's for a same-run A/B (--compare-tree)
CODE_ENV = "COMFYVN_BENCH_CODE"
sys.path.insert(0, os.environ.get(CODE_ENV) or str(ROOT))

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


def baseline(url: str, host: str, dest: Path, client: httpx.Client | None = None) -> int:
    """A plain streamed download; a new client each time (as a script would), or ``client`` kept
    across pulls (``baseline_warm``: no client set-up, i.e. no CA bundle loaded per pull)."""
    n = 0
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(httpx.Client(trust_env=False, timeout=60))
        resp = stack.enter_context(client.stream("GET", url, headers={"Host": host, "Accept-Encoding": "identity"}))
        fh = stack.enter_context(open(dest, "wb", buffering=MiB))
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


class Puller:
    """A workspace, a plan and a queue with its worker: pulls through ``download()`` or the queue."""

    def __init__(self, tmp: Path, info: dict, size: int) -> None:
        file_info = info["files"]["bench.bin"]
        self.tmp, self.size, self.file_info = tmp, size, file_info
        self.url = file_info["url"]  # http://<civitai storage host>/files/bench.bin, mapped to 127.0.0.1
        self.ws = init_workspace(workspace(tmp / "ws"))
        update_config(info["config_patch"], self.ws)
        update_config({"ingest": {"extra_allowed_hosts": [self.url.split("/")[2]], "rate_limit_rps": 1000,
                                   "rate_limit_burst": 100}}, self.ws)
        self.plan = RemotePlan(provider="civitai", source_url=self.url, download_url=self.url, filename="bench.bin",
                               expected_sha256=file_info["sha256"], expected_size=size)
        self.queue = AssetIngestQueue(self.ws, start_worker=True)

    def download(self) -> tuple[float, float]:
        """One ``download()``: (wall seconds, CPU seconds of this process)."""
        part = self.tmp / "remote.part"
        part.unlink(missing_ok=True)
        c, t = time.process_time(), time.perf_counter()
        sha, n = download(self.plan, part, ws=self.ws, max_bytes=self.size + MiB)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        assert (sha, n) == (self.file_info["sha256"], self.size), "download() returned the wrong file"
        part.unlink()
        return dt, dc

    def through_queue(self) -> tuple[float, float]:
        """One pull through the queue, enqueue → ``staged``: (wall seconds, CPU seconds)."""
        queue = self.queue
        c, t = time.process_time(), time.perf_counter()
        job_id = queue.enqueue("generic", {"sha256": self.file_info["sha256"], "size": self.size},
                               remote_url=self.url, terms_acknowledged=True)["job_id"]
        while (status := queue.db.query_one("SELECT status FROM ingest_jobs WHERE job_id = ?",
                                            (job_id,))[0]) in ("queued", "downloading"):
            time.sleep(0.002)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        job = queue.get(job_id)
        assert job is not None and status == "staged" and (job["digest"], job["bytes"]) == (self.file_info["sha256"], self.size), job
        queue.release(job_id)
        return dt, dc

    def stop(self) -> None:
        self.queue.stop_worker()


def child_puller(spec: dict) -> None:
    """A/B child: pull on request ("download" / "queue" lines on stdin), answer ``[wall, cpu]`` lines."""
    puller = Puller(Path(spec["tmp"]), spec["info"], spec["size"])
    print("ready", flush=True)
    for line in sys.stdin:
        what = line.strip()
        print(json.dumps(puller.download() if what == "download" else puller.through_queue()), flush=True)
    puller.stop()


class OtherTree:
    """The same pulls with another checkout's code (``--compare-tree``), in a child process."""

    def __init__(self, tree: Path, tmp: Path, info: dict, size: int) -> None:
        spec = json.dumps({"tmp": str(tmp), "info": info, "size": size})
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child-puller", spec],
                                     cwd=ROOT, env={**os.environ, CODE_ENV: str(tree)}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def run(self, what: str) -> tuple[float, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        wall, cpu = json.loads(self.proc.stdout.readline())
        return wall, cpu

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _ratios(base: list[float], other: list[float]) -> dict:
    """Each round's baseline time over the other's (higher is faster): median and best."""
    paired = [b / o for b, o in zip(base, other, strict=True)]
    return {"paired_median": round(statistics.median(paired), 3), "paired_best": round(max(paired), 3)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-memory"]:
        child_memory(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--child-puller"]:
        child_puller(json.loads(argv[1]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 MiB, 3 rounds (CI smoke)")
    ap.add_argument("--mib", type=int, default=None, help="file size in MiB (default 200, quick 32)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, quick 3)")
    ap.add_argument("--compare-tree", type=Path, default=None,
                    help="another checkout (e.g. `git archive <commit>` unpacked): its download() and queue pulls "
                         "in the same rounds, from a child process, each round's order rotated")
    args = ap.parse_args(argv)
    size = (args.mib or (32 if args.quick else 200)) * MiB
    rounds = args.rounds or (3 if args.quick else 5)

    server = subprocess.Popen([sys.executable, "-m", "tests.fakes.provider_server", "--file", f"bench.bin:{size}"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    other: OtherTree | None = None
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        file_info = info["files"]["bench.bin"]
        tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
        puller = Puller(tmp / "this", info, size)
        url = file_info["url"]
        host = url.split("/")[2]
        direct = f"http://127.0.0.1:{info['ports']['civitai_cdn']}/files/bench.bin"
        if args.compare_tree is not None:
            other = OtherTree(args.compare_tree.resolve(), tmp / "other", info, size)

        warm_client = httpx.Client(trust_env=False, timeout=60)

        def run_base(client: httpx.Client | None = None) -> tuple[float, float]:
            dest = tmp / "base.bin"
            c, t = time.process_time(), time.perf_counter()
            n = baseline(direct, host, dest, client)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            assert n == size
            dest.unlink()
            return dt, dc

        runs: dict[str, Callable[[], tuple[float, float]]] = {
            "baseline": run_base, "baseline_warm": lambda: run_base(warm_client), "download": puller.download,
            "queue": puller.through_queue}
        if other is not None:
            runs["other_download"] = lambda: other.run("download")
            runs["other_queue"] = lambda: other.run("queue")
        load_before = os.getloadavg()[0]
        for run in runs.values():  # warm every path (imports, page cache, server)
            run()
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        loads = []
        names = list(runs)
        for i in range(rounds):
            loads.append(os.getloadavg()[0])
            for name in names[i % len(names):] + names[:i % len(names)]:  # rotated: no fixed order
                w, c = runs[name]()
                wall[name].append(w)
                cpu[name].append(c)
        puller.stop()

        # Memory: one download() in a fresh process, so earlier rounds cannot hide its growth.
        child = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child-memory",
                                json.dumps({"ws": str(puller.ws.root), "url": url, "sha256": file_info["sha256"],
                                            "size": size, "dir": str(tmp)})],
                               cwd=ROOT, capture_output=True, text=True, check=True)
        mem = json.loads(child.stdout.strip().splitlines()[-1])
        rss_growth_mib = mem["rss_growth_mib"]
        have_hwm = mem["hwm"]

        tracemalloc.start()
        puller.download()
        _cur, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        # Best-of-N is the figure least disturbed by other load on a shared 2-core machine.
        base_t, remote_t, queue_t = wall["baseline"], wall["download"], wall["queue"]
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
            "throughput_ratio_paired_median": _ratios(base_t, remote_t)["paired_median"],
            "queue_throughput_ratio_paired_median": _ratios(base_t, queue_t)["paired_median"],
            "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
            "load_average_1m_rounds": [round(x, 2) for x in loads],
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
            "times_s": {k: [round(x, 3) for x in v] for k, v in wall.items()},
            "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
        # every pull against each baseline, round by round: wall-clock (baseline time / pull time) and CPU
        result["paired"] = {
            base: {name: {**_ratios(wall[base], wall[name]),
                          "cpu_ratio": round(cpu_median[name] / cpu_median[base], 3)}
                   for name in runs if not name.startswith("baseline")}
            for base in ("baseline", "baseline_warm")}
        if other is not None:
            result["compare_tree"] = str(args.compare_tree)
    finally:
        if other is not None:
            other.stop()
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
    for base, table in result["paired"].items():
        print(f"against {base}: " + "; ".join(
            f"{name} {r['paired_median']} (best {r['paired_best']}, CPU {r['cpu_ratio']}x)" for name, r in table.items())
            + (f"  [other_* = {result['compare_tree']}]" if other is not None else ""))
    return 0 if result["memory_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
