"""Asset gallery benchmarks (figures go to bench/results/gallery.json).

1. First render at N assets: ``AssetGallery(registry)`` = model page query with total + facets +
   the widget tree + the first page's 48 thumbnails (real PNG thumbnails, read from disk).
   Baseline, same run: one bare ``query_assets(limit=48, with_total=True)``.
2. Filter change at N assets (type, tag, licence, free text): ``gallery.set_filter(...)`` (query,
   count, tiles, thumbnails, selection state, pager) against the bare ``query_assets`` call with
   the same filter.
3. Select all matching (every asset of one type) against the same page walk without selecting.
4. Live delay: a second process registers K images one by one; delay = event commit time (the
   envelope's ``ts``) -> the gallery's grid showing the tile (its live worker re-renders).
   Baselines: the same events' delivery to a bare hook-bus subscriber in this process (the bus
   polls ``PRAGMA data_version`` every 25 ms), and a raw SQLite commit -> read in another
   connection polled at the same interval.

Rows beyond the real images come from the cached big registry (``bench/bigregistry.py``: the
registry's own schema and row codec, built once); the 48 newest assets are real images.
5. Memory of the kernel (this process, VmRSS/VmHWM) after the imports, after the first render,
   after the filter changes and after selecting all matching.

``--sizes 100000,1000000`` runs each size in its own process (so memory figures do not mix)
and writes them side by side.

``--baseline-widgets DIR`` (a copy of another checkout's ``widgets/`` folder, e.g. main's from
``git archive main widgets``) measures that gallery too, interleaved with this one round by round,
for the first render and the filter changes.  Each measured call is split into the calling
thread's CPU, its wait on the run queue (``/proc/thread-self/schedstat``: other processes had the
cores) and the rest (blocked: I/O, the GIL, a lock); comm messages are serialised as ipykernel
does (``Session``'s JSON packer) and counted, with the widgets opened.

    python bench/bench_gallery.py            # 100,000 assets
    python bench/bench_gallery.py --quick    # 5,000 assets (CI smoke run)
    python bench/bench_gallery.py --sizes 100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bigregistry  # noqa: E402
import comm  # noqa: E402
from comfyvn_widgets.gallery import AssetGallery  # noqa: E402
from jupyter_client.session import json_packer  # noqa: E402
from PIL import Image  # noqa: E402

from comfyvn.config import update_config  # noqa: E402
from comfyvn.hooks import get_hook_bus  # noqa: E402
from comfyvn.studio.core.asset_registry import AssetRegistry  # noqa: E402

COMMS = {"opened": 0, "messages": 0, "bytes": 0}


class KernelLikeComm(comm.base_comm.BaseComm):
    """What ipykernel's comm does with each message, short of the socket: JSON-pack it (counted)."""

    def publish_msg(self, msg_type: str, data=None, metadata=None, buffers=None, **keys) -> None:
        content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
        packed = json_packer({"msg_type": msg_type, "content": content, "metadata": metadata or {}})
        COMMS["opened" if msg_type == "comm_open" else "messages"] += 1
        COMMS["bytes"] += len(packed) + sum(len(b) for b in buffers or ())


comm.create_comm = KernelLikeComm


def load_widgets(folder: Path, name: str = "comfyvn_widgets_baseline"):
    """Import another checkout's ``widgets/`` folder as package ``name`` (its imports are relative)."""
    import importlib
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return importlib.import_module(f"{name}.gallery")


def schedstat() -> tuple[int, int]:
    """(CPU ns, run-queue wait ns) of the calling thread (zeros where the kernel does not say)."""
    try:
        fields = Path("/proc/thread-self/schedstat").read_text().split()
        return int(fields[0]), int(fields[1])
    except (OSError, IndexError, ValueError):
        return 0, 0


class Probe:
    """Wall time of a block, split: this thread's CPU, its run-queue wait, the rest (blocked);
    the comm traffic and the widgets opened meanwhile."""

    def __enter__(self) -> Probe:
        self._comms = dict(COMMS)
        self._sched = schedstat()
        self._cpu = time.thread_time()
        self._proc = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = (time.perf_counter() - self._wall) * 1000
        self.cpu = (time.thread_time() - self._cpu) * 1000
        self.process_cpu = (time.process_time() - self._proc) * 1000
        self.runq = (schedstat()[1] - self._sched[1]) / 1e6
        self.blocked = max(0.0, self.wall - self.cpu - self.runq)
        self.comms = {k: COMMS[k] - v for k, v in self._comms.items()}


def summary(probes: list[Probe]) -> dict:
    """Medians (and the best wall) of a list of probes."""
    med = statistics.median
    return {"wall_ms": round(med(p.wall for p in probes), 2), "best_wall_ms": round(min(p.wall for p in probes), 2),
            "cpu_ms": round(med(p.cpu for p in probes), 2), "process_cpu_ms": round(med(p.process_cpu for p in probes), 2),
            "runq_wait_ms": round(med(p.runq for p in probes), 2), "blocked_ms": round(med(p.blocked for p in probes), 2),
            "widgets_opened": probes[-1].comms["opened"], "comm_messages": probes[-1].comms["messages"],
            "comm_bytes": probes[-1].comms["bytes"], "loadavg": round(os.getloadavg()[0], 1)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time (ms) of ``repeats`` calls, and the last result."""
    samples, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), result


def make_png(path: Path, seed: int) -> Path:
    rng = random.Random(seed)
    im = Image.new("RGB", (640, 400), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(12):
        x, y = rng.randrange(600), rng.randrange(360)
        im.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 40, y + 40))
    im.save(path, format="PNG")
    return path


def rss_kib() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def seed(root: Path, n: int, images: int) -> AssetRegistry:
    registry = bigregistry.open_registry(n, root, log=lambda *a: None)
    update_config({"registry": {"default_project": registry.project_id}}, registry.ws)
    registry.make_thumbnails = True
    src = root / "src"
    src.mkdir()
    for i in range(images):  # newest: they fill the first page with real thumbnails
        registry.register_file(make_png(src / f"picture_{i:03d}.png", i), "backgrounds",
                               tags=["bench", "picture"], license_tag="cc0")
    registry.wait_for_thumbnails(120)
    return registry


def galleries(baseline) -> dict:
    """The galleries measured side by side: this checkout's, and the baseline's when given."""
    return {"this": AssetGallery, **({"baseline": baseline.AssetGallery} if baseline else {})}


def bench_render(registry: AssetRegistry, repeats: int, baseline=None) -> dict:
    base_ms, _ = timed(lambda: registry.query_assets(limit=48, with_total=True), repeats)
    kinds = galleries(baseline)
    probes: dict[str, list[Probe]] = {k: [] for k in kinds}
    thumbs = 0
    for i in range(repeats):  # one at a time: the previous worker must not compete with the next render
        for name, cls in (list(kinds.items()) if i % 2 else list(kinds.items())[::-1]):  # alternate who goes first
            with Probe() as probe:
                gallery = cls(registry, live=True)
            probes[name].append(probe)
            thumbs = len(gallery.grid.thumbs)
            deadline = time.monotonic() + 60
            while gallery.model.facets_stale and time.monotonic() < deadline:  # the worker fills the drop-downs
                time.sleep(0.01)
            gallery.close()
    render = {name: summary(p) for name, p in probes.items()}
    render_ms = render["this"]["wall_ms"]
    full_ms, _ = timed(lambda: AssetGallery(registry, live=False), repeats)
    out = {"baseline_query_ms": round(base_ms, 2), "gallery_first_render_ms": render_ms,
           "ratio": round(render_ms / base_ms, 1), "thumbnails_on_first_page": thumbs,
           "with_facets_ms": round(full_ms, 2), "with_facets_ratio": round(full_ms / base_ms, 1),
           "split": render,
           "note": "first render = page query + total + widget tree + 48 thumbnails + live worker start; "
                   "the filter drop-down counts (facets) follow from the worker; with_facets = all in one go"}
    return out


FILTER_CASES = {"type": {"asset_type": "sprites"}, "tag": {"tags": ["tag003"]}, "rare tag": {"tags": ["tag350"]},
             "licence": {"license": "cc0"}, "text": {"text": "asset 4242"},
             "type+tag+licence": {"asset_type": "audio", "tags": ["tag001"], "license": "mit"},
             "sort largest": {"sort": "largest"}, "sort recently changed": {"sort": "updated"},
             "type + sort by path": {"asset_type": "backgrounds", "sort": "name"}}


def shown_and_counted(gallery, changes: dict) -> tuple[Probe, float]:
    """A filter change as a person makes it (live gallery): the probe until the page is shown, and
    the wall time until its count is shown too (the worker counts after the page, where it does)."""
    gallery.set_filter(asset_type=None, tags=(), license=None, text="", sort="newest")  # back to all
    wait_counted(gallery)
    start = time.perf_counter()
    with Probe() as probe:
        gallery.set_filter(**changes)
    wait_counted(gallery)
    return probe, (time.perf_counter() - start) * 1000


def wait_counted(gallery, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while getattr(gallery.model, "total_pending", False) and time.monotonic() < deadline:
        time.sleep(0.002)


def bench_filters(registry: AssetRegistry, repeats: int, baseline=None, skip: tuple[str, ...] = ()) -> dict:
    kinds = galleries(baseline)
    live = {}
    for name, cls in kinds.items():
        live[name] = cls(registry, live=True)
        deadline = time.monotonic() + 60
        while live[name].model.facets_stale and time.monotonic() < deadline:
            time.sleep(0.01)
    gallery = AssetGallery(registry, live=False)
    cases = {k: v for k, v in FILTER_CASES.items() if k not in skip}
    out = {}
    for name, changes in cases.items():
        kwargs = gallery.model.filter.__class__(**{k: tuple(v) if k == "tags" else v for k, v in changes.items()}
                                                ).query_kwargs()
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        base_ms, page = timed(lambda kw=kwargs: registry.query_assets(limit=48, with_total=True, **kw), repeats)

        def change(c=changes):
            gallery.set_filter(asset_type=None, tags=(), license=None, text="", sort="newest")  # back to all
            start = time.perf_counter()
            gallery.set_filter(**c)
            return (time.perf_counter() - start) * 1000

        samples = [change() for _ in range(repeats)]
        ms = statistics.median(samples)
        out[name] = {"baseline_query_ms": round(base_ms, 2), "filter_change_ms": round(ms, 2),
                     "ratio": round(ms / base_ms, 2), "matches": page["total"],
                     "gallery_shows": gallery.model.total_text, "loadavg": os.getloadavg()[0]}
        probes: dict[str, list[Probe]] = {k: [] for k in kinds}
        counted: dict[str, list[float]] = {k: [] for k in kinds}
        for i in range(repeats):  # the live galleries, interleaved (who goes first alternates)
            for kind in (list(kinds) if i % 2 else list(kinds)[::-1]):
                probe, until_counted = shown_and_counted(live[kind], changes)
                probes[kind].append(probe)
                counted[kind].append(until_counted)
        out[name]["live"] = {kind: {**summary(p), "until_counted_ms": round(statistics.median(counted[kind]), 2)}
                             for kind, p in probes.items()}
    for g in live.values():
        g.close()
    return out


def bench_during_recount(registry: AssetRegistry, repeats: int, baseline=None) -> dict:
    """A filter change made while the live worker recounts the drop-downs (GROUP BYs over every
    asset, every few seconds while assets change)."""
    out = {}
    for kind, cls in galleries(baseline).items():
        gallery = cls(registry, live=True)
        samples = []
        for i in range(repeats):
            deadline = time.monotonic() + 60
            while gallery.model.facets_stale and time.monotonic() < deadline:
                time.sleep(0.01)
            recount = threading.Thread(target=gallery._sync_facets, kwargs={"refresh": True})
            recount.start()
            time.sleep(0.05)  # the recount is under way
            with Probe() as probe:
                gallery.set_filter(asset_type="sprites" if i % 2 else "audio")
            samples.append(probe)
            recount.join()
            wait_counted(gallery)
        gallery.close()
        out[kind] = summary(samples)
    return out


def bench_select_all(registry: AssetRegistry, n: int) -> dict:
    kind = "backgrounds"  # ~24% of the assets: ~240,000 at a million
    gallery = AssetGallery(registry, live=False)
    gallery.set_filter(asset_type=kind)

    def bare() -> int:
        return len(registry.db.conn.execute("SELECT uid FROM assets WHERE project_id = ? AND type = ? ORDER BY"
                                            " created_at DESC, uid DESC", (registry.project_id, kind)).fetchall())

    def walk():  # what select all matching did before: pages of 1,000 decoded records
        cursor, got = None, 0
        while True:
            page = registry.query_assets(limit=1000, cursor=cursor, asset_type=kind)
            got += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return got

    def select() -> int:
        gallery.model.clear_selection()
        return gallery.model.select_all_matching()

    base_ms, matching = timed(bare, 3)
    ms, added = timed(select, 3)
    out = {"matching": matching, "baseline_bare_select_uid_ms": round(base_ms, 1), "select_all_ms": round(ms, 1),
           "ratio": round(ms / base_ms, 2), "selected": added, "loadavg": os.getloadavg()[0]}
    if n <= 200_000:
        out["old_page_walk_ms"] = round(timed(walk, 1)[0], 1)
    return out


def raw_commit_to_read(db_path: Path, k: int, interval: float) -> list[float]:
    """Another process commits a row; a second connection polls data_version at the bus interval."""
    code = textwrap.dedent(f"""
        import sqlite3, time, sys
        c = sqlite3.connect({str(db_path)!r}, isolation_level=None, timeout=30)
        c.execute("CREATE TABLE IF NOT EXISTS bench_ping(t REAL)")
        for _ in range({k}):
            time.sleep(0.15)
            c.execute("BEGIN IMMEDIATE"); c.execute("INSERT INTO bench_ping VALUES (?)", (time.time(),))
            c.execute("COMMIT")
    """)
    reader = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    proc = subprocess.Popen([sys.executable, "-c", code])
    delays: list[float] = []
    seen = 0
    version = None
    deadline = time.monotonic() + 60
    while len(delays) < k and time.monotonic() < deadline:
        v = reader.execute("PRAGMA data_version").fetchone()[0]
        if v != version:
            version = v
            try:
                rows = reader.execute("SELECT t FROM bench_ping WHERE rowid > ?", (seen,)).fetchall()
            except sqlite3.OperationalError:  # the table is not there yet
                rows = []
            now = time.time()
            for (t,) in rows:
                delays.append((now - t) * 1000)
            seen += len(rows)
        time.sleep(interval)
    proc.wait(timeout=30)
    reader.close()
    return delays


def bench_live(registry: AssetRegistry, k: int, root: Path) -> dict:
    seen_at: dict[str, float] = {}
    lock = threading.Lock()

    class TimedGallery(AssetGallery):
        def render(self) -> None:
            super().render()
            now = time.time()
            with lock:
                for tile in self.grid.tiles:
                    seen_at.setdefault(tile["uid"], now)

    bus_seen: dict[str, float] = {}
    event_ts: dict[str, float] = {}

    def on_event(env: dict) -> None:
        uid = env["data"].get("uid")
        if uid and env["event"] == "on_asset_registered":
            bus_seen.setdefault(uid, time.time())
            event_ts[uid] = env["ts"]

    gallery = TimedGallery(registry, live=True)
    sub = get_hook_bus(registry.db).subscribe(on_event, topics=["on_asset_registered"])
    src = root / "live_src"
    src.mkdir()
    files = [make_png(src / f"live_{i:03d}.png", 1000 + i) for i in range(k)]
    code = textwrap.dedent(f"""
        import time
        from comfyvn.studio.core.asset_registry import AssetRegistry
        reg = AssetRegistry()
        for path in {[str(f) for f in files]!r}:
            time.sleep(0.15)
            reg.register_file(path, "backgrounds", tags="live")
        reg.wait_for_thumbnails(60)
    """)
    env = dict(os.environ, COMFYVN_HOME=str(registry.ws.root),
               PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if len([u for u in event_ts if u in seen_at]) >= k:
                break
        time.sleep(0.02)
    sub.close()
    gallery.close()
    with lock:
        gallery_delays = [(seen_at[u] - event_ts[u]) * 1000 for u in event_ts if u in seen_at]
    bus_delays = [(bus_seen[u] - event_ts[u]) * 1000 for u in event_ts]
    raw = raw_commit_to_read(registry.ws.db_path, k, get_hook_bus(registry.db).poll_interval)

    def stats(values: list[float]) -> dict:
        return {"n": len(values), "p50_ms": round(percentile(values, 50), 1), "p95_ms": round(percentile(values, 95), 1),
                "max_ms": round(max(values), 1)} if values else {"n": 0}

    g, b, r = stats(gallery_delays), stats(bus_delays), stats(raw)
    return {"gallery": g, "baseline_bus_subscriber": b, "baseline_raw_sqlite_commit_to_read": r,
            "ratio_p50_vs_bus": round(g["p50_ms"] / max(b["p50_ms"], 0.1), 1) if g.get("n") else None,
            "bus_poll_interval_ms": get_hook_bus(registry.db).poll_interval * 1000,
            "note": "gallery delay includes the 80 ms debounce and a page query + count + facets at this size"}


def run_size(n: int, quick: bool, baseline_dir: Path | None = None, skip: tuple[str, ...] = ()) -> dict:
    repeats, k = (3, 6) if quick else (7, 20)
    started = time.monotonic()
    baseline = load_widgets(baseline_dir) if baseline_dir else None
    memory = {"after_imports": rss_kib()}
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-gallery-") as tmp:
        root = Path(tmp) / "ws"
        os.environ["COMFYVN_HOME"] = str(root)
        t0 = time.monotonic()
        registry = seed(root, n, images=48)
        seed_s = time.monotonic() - t0
        memory["after_opening_the_registry"] = rss_kib()
        results = {
            "assets": registry.count(), "seed_s": round(seed_s, 1), "quick": quick,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "first_render": bench_render(registry, repeats, baseline),
        }
        results["first_render"]["loadavg"] = os.getloadavg()[0]
        memory["after_first_renders"] = rss_kib()
        results["filter_change"] = bench_filters(registry, repeats, baseline, skip)
        memory["after_filter_changes"] = rss_kib()
        results["filter_change_during_recount"] = bench_during_recount(registry, min(repeats, 5), baseline)
        results["select_all_matching"] = bench_select_all(registry, n)
        memory["after_select_all"] = rss_kib()
        results["live_delay"] = bench_live(registry, k, Path(tmp))
        results["kernel_memory_kib"] = memory
    results["wall_s"] = round(time.monotonic() - started, 1)
    return results


def report(results: dict) -> None:
    fr, live = results["first_render"], results["live_delay"]
    print(f"gallery bench at {results['assets']:,} assets (seeded in {results['seed_s']} s)")
    print(f"  first render      {fr['gallery_first_render_ms']:8.1f} ms   bare page query {fr['baseline_query_ms']:.1f} ms"
          f"  (x{fr['ratio']}; with facets {fr['with_facets_ms']:.1f} ms, x{fr['with_facets_ratio']}) "
          f"load {fr['loadavg']:.1f}")

    def split(name: str, r: dict) -> str:
        extra = f" counted {r['until_counted_ms']:.1f}" if "until_counted_ms" in r else ""
        return (f"    {name:<9} wall {r['wall_ms']:7.1f} (best {r['best_wall_ms']:.1f}){extra} ms = cpu {r['cpu_ms']:.1f}"
                f" + run queue {r['runq_wait_ms']:.1f} + blocked {r['blocked_ms']:.1f}; process cpu"
                f" {r['process_cpu_ms']:.1f}; {r['widgets_opened']} widgets, {r['comm_messages']} messages,"
                f" {r['comm_bytes']:,} B; load {r['loadavg']}")

    for name, r in fr["split"].items():
        print(split(name, r))
    for name, r in results["filter_change"].items():
        print(f"  filter {name:<22}{r['filter_change_ms']:8.1f} ms   bare query {r['baseline_query_ms']:.1f} ms"
              f"  (x{r['ratio']}, {r['matches']:,} matches, shown as {r['gallery_shows']}) load {r['loadavg']:.1f}")
        for kind, lr in r["live"].items():
            print(split(kind, lr))
    print("  filter change during a drop-down recount")
    for kind, r in results["filter_change_during_recount"].items():
        print(split(kind, r))
    sa = results["select_all_matching"]
    print(f"  select all {sa['matching']:,} {sa['select_all_ms']:8.1f} ms   bare SELECT uid {sa['baseline_bare_select_uid_ms']}"
          f" ms, old page walk {sa.get('old_page_walk_ms')} ms")
    g, b, r = live["gallery"], live["baseline_bus_subscriber"], live["baseline_raw_sqlite_commit_to_read"]
    print(f"  live delay p50/p95  gallery {g.get('p50_ms')}/{g.get('p95_ms')} ms   bus subscriber "
          f"{b.get('p50_ms')}/{b.get('p95_ms')} ms   raw sqlite {r.get('p50_ms')}/{r.get('p95_ms')} ms")
    print(f"  kernel memory (KiB): {results['kernel_memory_kib']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 assets, fewer repeats (CI smoke run)")
    parser.add_argument("--assets", type=int, default=None)
    parser.add_argument("--sizes", default=None, help="comma-separated sizes, each in its own process")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--baseline-widgets", type=Path, default=None,
                        help="another checkout's widgets/ folder, measured interleaved with this one")
    parser.add_argument("--skip", default="", help="filter cases to leave out, comma-separated (e.g. text)")
    args = parser.parse_args(argv)
    if args.sizes:
        import subprocess

        merged = {}
        for n in (int(x) for x in args.sizes.split(",")):
            bigregistry.cached_db(n)  # built once, before anything is timed
            part = Path(tempfile.mkdtemp(prefix="comfyvn-bench-gallery-part-")) / "out.json"
            extra = ["--baseline-widgets", str(args.baseline_widgets)] if args.baseline_widgets else []
            extra += ["--skip", args.skip] if args.skip else []
            subprocess.run([sys.executable, __file__, "--assets", str(n), "--out", str(part), *extra], check=True)
            merged[str(n)] = json.loads(part.read_text())
        out = args.out or HERE / "results" / "gallery_scale.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
        print(f"  -> {out}")
        return 0
    n = args.assets or (5_000 if args.quick else 100_000)
    results = run_size(n, args.quick, args.baseline_widgets, tuple(x for x in args.skip.split(",") if x))
    out = args.out or HERE / "results" / "gallery.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report(results)
    print(f"  -> {out} ({results['wall_s']} s)")
    g = results["live_delay"]["gallery"]
    ok = g.get("n", 0) == (6 if args.quick else 20)
    if not ok:
        print(f"live delay: only {g.get('n', 0)} registrations reached the gallery", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
