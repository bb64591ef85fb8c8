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
3. ``--scale 100000,1000000`` (issue 19, a million assets): per size, a registry from the cached
   big registry (``bench/bigregistry.py``: built once, minutes), and interleaved in rounds
   * ``list_assets`` type + tag + licence, page of 50 (tags drawn from the 100 most used of
     400, so rare ones are in), against the bare SQL a script would run (``SELECT a.*`` with the
     tag as an EXISTS probe, no decoding), wall and CPU; the next page by cursor;
   * exact and capped (10,000) counts of a tag filter, the whole registry and the three filters;
   * "select all matching" of the type with ~24% of the assets (~240,000 at a million):
     ``matching_uids`` against a bare ``SELECT uid`` and against the page walk the gallery
     used to do (1,000 decoded records a page);
   * the query plans (EXPLAIN QUERY PLAN) of a common-tag and a rare-tag page;
   * ``--server``: a ``jupyter server`` answering ``GET /assets`` (the same filters, through
     HTTP): latency and the server's memory (VmRSS / VmHWM) after start and after the requests.
4. ``--scale … --fulltext``: free text (``text=``) per size, the trigram index against the
   ``LIKE`` scan it replaced (the same code with the index switched off), interleaved: the
   gallery's filter change (page of 48 + count capped at 10,000), the exact count and "select all
   matching", for rare to common texts, alone and with a type or tag filter; and registering
   ``--files`` small files with the index's triggers against the same registry without them.

    python bench/bench_registry.py            # 10,000 files / 100,000 assets
    python bench/bench_registry.py --quick    # 1,000 files / 10,000 assets (CI smoke run)
    python bench/bench_registry.py --scale 100000,1000000 --server   # a million assets only
    python bench/bench_registry.py --scale 100000,1000000 --fulltext --no-pages --files 10000
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
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

sys.path.insert(0, str(HERE))

import bigregistry  # noqa: E402

import comfyvn.registry.records as recordsmod  # noqa: E402
from comfyvn.config import init_workspace, update_config, workspace  # noqa: E402
from comfyvn.fsutil import fsync_dir  # noqa: E402
from comfyvn.registry.records import Records  # noqa: E402
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
        tag_rows.extend((reg.project_id, uid, t, kind, rec["license"], rec["created_at"]) for t in tags)
    with reg.db.transaction() as conn:
        conn.executemany(
            "INSERT INTO assets(project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at,"
            " updated_at, meta, preview, provenance, search_text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.executemany("INSERT INTO asset_tags(project_id, uid, tag, type, license, created_at)"
                         " VALUES (?,?,?,?,?,?)", tag_rows)
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


# ------------------------------------------------------------------------------ scale (issue 19)
BARE_PAGE = ("SELECT a.* FROM assets a WHERE a.project_id = ? AND a.type = ? AND a.license = ? AND EXISTS"
             " (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id AND t.tag = ? AND t.uid = a.uid)"
             " ORDER BY a.created_at DESC, a.uid DESC LIMIT 51")


def stats(values: list[float]) -> dict:
    return {"n": len(values), "p50_ms": round(statistics.median(values), 3),
            "p95_ms": round(percentile(values, 0.95), 3), "max_ms": round(max(values), 3)} if values else {}


def timed_ms(fn) -> tuple[float, float, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000, out


def query_plan(reg: AssetRegistry, fn) -> list[list[str]]:
    seen: list[str] = []
    reg.db.conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        reg.db.conn.set_trace_callback(None)
    return [[r[3] for r in reg.db.query("EXPLAIN QUERY PLAN " + sql)] for sql in seen
            if sql.startswith(("SELECT a.", "SELECT COUNT"))]


def page_rounds(reg: AssetRegistry, combos: list[tuple[str, str, str]], rounds: int) -> dict:
    """list_assets type + tag + licence pages against the bare SQL, interleaved, ``rounds`` times."""
    conn, pid = reg.db.conn, reg.project_id
    out: dict[str, Any] = {"rounds": rounds, "loadavg": [],
                           "filter": "type + tag + licence, page of 50 (tags: the 100 most used of 400)"}
    wall: dict[str, list[float]] = {"bare_sql": [], "list_assets": [], "next_page": []}
    cpu: dict[str, list[float]] = {"bare_sql": [], "list_assets": []}
    sizes = []
    # the page as sent before registry.007_tag_copies (Records.tag_order = False): SQLite's assets
    # index walk or rare-tag drive, PostgreSQL's late row lookup (its planner's hash join)
    before_form = Records.of(reg)
    before_form.tag_order = False
    wall["before"], cpu["before"] = [], []
    for r in range(rounds):
        out["loadavg"].append(os.getloadavg()[0])
        for i, (kind, tag, lic) in enumerate(combos):
            def bare(k=kind, t=tag, li=lic):
                return conn.execute(BARE_PAGE, (pid, k, li, t)).fetchall()

            def ours(k=kind, t=tag, li=lic):
                return reg.query_assets(asset_type=k, tags=[t], license=li, limit=50)

            def before(k=kind, t=tag, li=lic):
                return before_form.query_assets(asset_type=k, tags=[t], license=li, limit=50)

            order = [("bare_sql", bare), ("list_assets", ours), ("before", before)]
            if (i + r) % 2:
                order.reverse()
            for name, fn in order:
                w, c, res = timed_ms(fn)
                wall[name].append(w)
                cpu[name].append(c)
                if name == "list_assets":
                    page = res
                    if r == 0:
                        sizes.append(len(page["items"]))
            if page["next_cursor"]:
                w, _, _ = timed_ms(lambda k=kind, t=tag, li=lic, cur=page["next_cursor"]: reg.query_assets(
                    asset_type=k, tags=[t], license=li, limit=50, cursor=cur))
                wall["next_page"].append(w)
    out["page"] = {name: stats(v) for name, v in wall.items()}
    out["page_cpu"] = {name: stats(v) for name, v in cpu.items()}
    out["page"]["ratio_p50"] = round(out["page"]["list_assets"]["p50_ms"] / out["page"]["bare_sql"]["p50_ms"], 2)
    out["page"]["ratio_p95"] = round(out["page"]["list_assets"]["p95_ms"] / out["page"]["bare_sql"]["p95_ms"], 2)
    out["page_cpu"]["ratio_p50"] = round(out["page_cpu"]["list_assets"]["p50_ms"]
                                         / max(1e-6, out["page_cpu"]["bare_sql"]["p50_ms"]), 2)
    out["avg_items_per_page"] = round(statistics.mean(sizes), 1)
    out["full_pages"] = sum(1 for x in sizes if x == 50)
    return out


def bench_scale_one(n: int, queries: int, rounds: int, work: Path, rng: random.Random) -> dict:
    t0 = time.perf_counter()
    reg = bigregistry.open_registry(n, work / f"scale_{n}")
    opened_s = time.perf_counter() - t0
    records, conn, pid = Records.of(reg), reg.db.conn, reg.project_id
    types, lics = list(bigregistry.TYPES), [x for x in bigregistry.LICENCES if x]
    combos = [(rng.choice(types), rng.choice(bigregistry.TAGS[:100]), rng.choice(lics)) for _ in range(queries)]
    for kind, tag, lic in combos[:30]:  # warm the page cache
        reg.list_assets(kind, tags=[tag], license=lic, limit=50)
        conn.execute(BARE_PAGE, (pid, kind, lic, tag)).fetchall()
    out: dict[str, Any] = {"assets": n, "open_copy_s": round(opened_s, 2), **page_rounds(reg, combos, rounds)}
    common = max(((k, t, li) for k, t, li in combos), key=lambda c: -int(c[1][3:]))
    rare = max(((k, t, li) for k, t, li in combos), key=lambda c: int(c[1][3:]))
    out["plans"] = {f"{label} ({c[1]})": query_plan(reg, lambda c=c: reg.query_assets(
        asset_type=c[0], tags=[c[1]], license=c[2], limit=50)) for label, c in (("common tag", common),
                                                                                  ("rare tag", rare))}
    # counts: exact (the API's total=true) and capped (the gallery), against a bare COUNT(*)
    counts: dict[str, Any] = {}
    for label, kw in (("every asset", {}), ("one tag (tag003)", {"tags": ["tag003"]}),
                      ("type + tag + licence", {"asset_type": "audio", "tags": ["tag001"], "license": "mit"})):
        bare_sql = ("SELECT COUNT(*) FROM assets a WHERE a.project_id = ?"
                    + (" AND a.type = ?" if "asset_type" in kw else "") + (" AND a.license = ?" if "license" in kw
                                                                           else "")
                    + (" AND EXISTS (SELECT 1 FROM asset_tags t WHERE t.project_id = a.project_id AND t.tag = ?"
                       " AND t.uid = a.uid)" if "tags" in kw else ""))
        params = [pid] + ([kw["asset_type"]] if "asset_type" in kw else []) + (
            [kw["license"]] if "license" in kw else []) + (kw["tags"] if "tags" in kw else [])
        samples: dict[str, list[float]] = {"bare_count": [], "exact": [], "capped_10000": []}
        for _ in range(5):
            samples["bare_count"].append(timed_ms(lambda q=bare_sql, p=params: conn.execute(q, p).fetchone())[0])
            w, _, page = timed_ms(lambda kw=kw: records.query_assets(limit=1, with_total=True, **kw))
            samples["exact"].append(w)
            matches = page["total"]
            samples["capped_10000"].append(timed_ms(lambda kw=kw: records.query_assets(
                limit=1, with_total=True, total_cap=10_000, **kw))[0])
        counts[label] = {"matches": matches, **{k: round(statistics.median(v), 2) for k, v in samples.items()}}
    out["counts_ms"] = counts
    # select all matching: ids only in one query, against a bare SELECT uid and the old page walk
    kind = "backgrounds"

    def walk() -> int:
        cursor, got = None, 0
        while True:
            page = reg.query_assets(limit=1000, cursor=cursor, asset_type=kind)
            got += len(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return got

    sel: dict[str, list[float]] = {"bare_select_uid": [], "matching_uids": []}
    for i in range(3):
        order = [("bare_select_uid", lambda: conn.execute(
            "SELECT uid FROM assets WHERE project_id = ? AND type = ? ORDER BY created_at DESC, uid DESC",
            (pid, kind)).fetchall()), ("matching_uids", lambda: records.matching_uids(asset_type=kind))]
        for name, fn in (order if i % 2 else order[::-1]):
            w, _, res = timed_ms(fn)
            sel[name].append(w)
    walk_ms, _, walked = timed_ms(walk)
    out["select_all"] = {"filter": f"type {kind}", "matching": len(res), **{k: round(statistics.median(v), 1)
                                                                         for k, v in sel.items()},
                         "old_page_walk_ms": round(walk_ms, 1), "old_page_walk_items": walked}
    reg.db.close()
    return out


# ------------------------------------------------------------------------------ free text (issue 19 point 4)
#: texts over the big registry's search_text ("sprites/0042/asset_0042123.bin sprites cc0 tag001 {"title":
#: "asset 42123"}"), rare to common; the match counts are measured
FULLTEXT_QUERIES: list[tuple[str, dict]] = [
    ("asset_0004242", {}), ("asset 4242", {}), ("0042/", {}), ("tag399", {}), ("tag150", {}), ("voices", {}),
    ("cc-by-nc", {}), ("asset", {}), ("no-such-text", {}), ("q9", {}),
    ("0042/", {"asset_type": "audio"}), ("asset 4242", {"tags": ["tag000"]}), ("cc-by-nc", {"tags": ["tag200"]}),
]


class index_off:
    """The free-text path as it was before the index (a ``LIKE`` scan): the same code, every text
    treated as too short for the trigram index (SQLite); PostgreSQL's session without bitmap
    scans, the only way it reads a GIN index."""

    def __init__(self, reg: AssetRegistry) -> None:
        self.pg = reg.db.engine == "postgresql"
        self.conn = reg.db.conn

    def __enter__(self) -> None:
        self.saved = recordsmod.TEXT_INDEX_MIN
        recordsmod.TEXT_INDEX_MIN = 10**9
        if self.pg:
            self.conn.execute("SET enable_bitmapscan = off")

    def __exit__(self, *exc: object) -> None:
        recordsmod.TEXT_INDEX_MIN = self.saved
        if self.pg:
            self.conn.execute("SET enable_bitmapscan = on")


def bench_fulltext(n: int, rounds: int, work: Path, reg: AssetRegistry | None = None) -> dict:
    """The gallery's free-text filter change (page of 48 + total capped at 10,000), the exact count
    and "select all matching", with the index and with the LIKE scan, interleaved per query."""
    reg = reg or bigregistry.open_registry(n, work / f"fulltext_{n}")
    records = Records.of(reg)
    measures = {
        "filter_change": lambda kw: records.query_assets(limit=48, with_total=True, total_cap=10_000, **kw),
        "exact_count": lambda kw: records.query_assets(limit=1, with_total=True, **kw)["total"],
        "select_all": lambda kw: records.matching_uids(**kw),
    }
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    matches: dict[str, int] = {}
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for q, (text, extra) in enumerate(FULLTEXT_QUERIES):
            label = text + "".join(f" + {k}={v}" for k, v in extra.items())
            kw = {"text": text, **extra}
            for measure, fn in measures.items():
                if measure != "filter_change" and extra:
                    continue
                got = {}
                for variant in (["index", "like_scan"] if (q + r) % 2 else ["like_scan", "index"]):
                    if variant == "like_scan":
                        with index_off(reg):
                            w, c, got[variant] = timed_ms(lambda fn=fn, kw=kw: fn(kw))
                    else:
                        w, c, got[variant] = timed_ms(lambda fn=fn, kw=kw: fn(kw))
                    cell = samples.setdefault(label, {}).setdefault(measure, {})
                    cell.setdefault(variant, []).append(w)
                    cell.setdefault(variant + "_cpu", []).append(c)
                assert got["index"] == got["like_scan"], (label, measure)  # the same answer, always
                if measure == "exact_count":
                    matches[label] = got["index"]
                elif measure == "filter_change" and label not in matches:
                    matches[label] = got["index"]["total"]
    out: dict[str, Any] = {"assets": n, "rounds": rounds, "loadavg": loads, "queries": {}}
    for label, cells in samples.items():
        row: dict[str, Any] = {"matches": matches[label]}
        for measure, variants in cells.items():
            med = {k: round(statistics.median(v), 2) for k, v in variants.items()}
            med.update({k + "_best": round(min(v), 2) for k, v in variants.items() if not k.endswith("_cpu")})
            med["ratio"] = round(med["like_scan"] / max(med["index"], 1e-3), 1)
            med["cpu_ratio"] = round(med["like_scan_cpu"] / max(med["index_cpu"], 1e-3), 1)
            row[measure] = med
        out["queries"][label] = row
    if reg.db.engine == "sqlite":
        out["plans"] = {text: query_plan(reg, lambda text=text: records.query_assets(limit=48, text=text))
                        for text in ("asset 4242", "cc-by-nc", "q9")}
    else:
        out["index_bytes"] = reg.db.query_one("SELECT pg_relation_size('assets_search_trgm')")[0]
    reg.db.close()
    return out


def bench_fulltext_pg(sizes: list[int], rounds: int, work: Path) -> dict:
    """bench_fulltext on PostgreSQL: the same rows (build_pg_registry, GIN index built after the COPY)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from pgserver import start_cluster

    out: dict[str, Any] = {}
    cluster = start_cluster()
    try:
        cluster.psql(f"ALTER SYSTEM SET shared_buffers = '{PG_SHARED_BUFFERS}'")
        cluster.restart()
        for n in sizes:
            url, built_s = build_pg_registry(cluster, n)
            reg = registry_on(url, work / f"ft_pg_{n}")
            # every statement planned with the session's settings of the moment: a plan psycopg prepared
            # (after 5 runs) is cached across SET enable_bitmapscan, and the baseline's walk was then reused
            # by the index's runs (and the index's bitmap scan by the baseline's)
            reg.db.conn._raw().prepare_threshold = None
            out[str(n)] = {"pg_build_s": round(built_s, 1), **bench_fulltext(n, rounds, work, reg)}
    finally:
        cluster.destroy()
    return out


def bench_register_fulltext(n: int, rounds: int, work: Path, rng: random.Random) -> dict:
    """Registering ``n`` small files (``registry.fsync=false``) with the index's triggers against the
    same registry without them (dropped), and the copy + hash + JSON baseline, interleaved."""
    files = make_sources(work / "fulltext_sources", n, rng)
    indexed = new_registry(work / "ws_indexed", fsync=False)
    plain = new_registry(work / "ws_no_index", fsync=False)
    with plain.db.transaction() as conn:
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'assets_fts%'"
                                    ).fetchall():
            conn.execute(f"DROP TRIGGER {name}")
    load = os.getloadavg()[0]
    wall, cpu = _interleaved({
        "baseline": lambda chunk, i: baseline(chunk, work / "fulltext_baseline" / str(i), durable=False),
        "with_index": lambda chunk, i: [indexed.register_file(p, "models") for p in chunk],
        "without_index": lambda chunk, i: [plain.register_file(p, "models") for p in chunk],
    }, files, rounds, rng)
    assert indexed.count() == plain.count() == n
    with indexed.db.transaction() as conn:
        conn.execute("INSERT INTO assets_fts(assets_fts, rank) VALUES ('integrity-check', 1)")
    ms = lambda seconds: round(seconds / n * 1000, 4)  # noqa: E731
    return {"files": n, "rounds": rounds, "loadavg": [load, os.getloadavg()[0]],
            "ms_per_file": {k: ms(v) for k, v in wall.items()}, "cpu_ms_per_file": {k: ms(v) for k, v in cpu.items()},
            "index_cost": round(wall["with_index"] / wall["without_index"], 3),
            "index_cost_cpu": round(cpu["with_index"] / cpu["without_index"], 3)}


def rss_kib(pid: int | str = "self") -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def bench_server(n: int, queries: int, work: Path, rng: random.Random) -> dict:
    """A jupyter server answering GET /assets on n assets: latency and its memory."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import httpx
    from live_server import live_server_context

    root = work / f"server_{n}"
    ws = init_workspace(workspace(root / "workspace"))
    update_config({"registry": {"default_project": bigregistry.PROJECT}}, ws)
    shutil.copyfile(bigregistry.cached_db(n), ws.db_path)
    types, lics = list(bigregistry.TYPES), [x for x in bigregistry.LICENCES if x]
    with live_server_context(root, new_session=True) as server, httpx.Client(headers=server.headers,
                                                                             timeout=60) as client:
        pid = server.proc.pid
        client.get(server.url("assets"), params={"project": bigregistry.PROJECT, "limit": 1}).raise_for_status()
        started = rss_kib(pid)
        lat: list[float] = []
        for i in range(queries):
            params = {"project": bigregistry.PROJECT, "type": rng.choice(types),
                      "tags": rng.choice(bigregistry.TAGS[:100]), "license": rng.choice(lics), "limit": 50}
            if i % 4 == 0:
                params["total"] = "true"
            t0 = time.perf_counter()
            resp = client.get(server.url("assets"), params=params)
            lat.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()
        after = rss_kib(pid)
    return {"assets": n, "requests": queries, "http": stats(lat), "server_rss_kib_after_start": started,
            "server_rss_kib_after_requests": after, "loadavg": os.getloadavg()[0],
            "note": "every 4th request asks total=true (an exact count)"}


AUDIT_CHILD = """
import json, sys, time, hashlib
sys.path.insert(0, sys.argv[1])
from pathlib import Path
mode, ws_root, project = sys.argv[2], sys.argv[3], sys.argv[4]

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

t0, c0 = time.perf_counter(), time.process_time()
if mode == "baseline":  # what a script does: each row's file hashed, its sidecar parsed and compared
    import sqlite3
    conn = sqlite3.connect(sys.argv[5])
    root = Path(sys.argv[6])
    bad = rows = 0
    for uid, path, digest in conn.execute("SELECT uid, path, hash FROM assets WHERE project_id = ?", (project,)):
        rows += 1
        f = root / path
        if not f.exists() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            bad += 1
            continue
        doc = json.loads((root / (path + ".asset.json")).read_text())
        if doc.get("uid") != uid or doc.get("hash") != digest:
            bad += 1
    out = {"rows": rows, "problems": bad}
else:
    from comfyvn.registry import audit_sidecars
    from comfyvn.studio.core.asset_registry import AssetRegistry
    from comfyvn.config import workspace
    reg = AssetRegistry(project, ws=workspace(ws_root), make_thumbnails=False, recover=False)
    ticks = []
    report = audit_sidecars(reg, progress=lambda d, t: ticks.append(d)) if mode == "streaming" else audit_sidecars(reg)
    out = {"rows": report["summary"]["assets"], "problems": report["summary"]["findings"],
           "counts": report["counts"], "progress_reports": len(ticks)}
out.update(wall_s=round(time.perf_counter() - t0, 1), cpu_s=round(time.process_time() - c0, 1), peak_rss_kib=hwm())
print(json.dumps(out))
"""


def run_audit_child(mode: str, reg: AssetRegistry, code_root: Path) -> dict:
    import subprocess

    args = [sys.executable, "-c", AUDIT_CHILD, str(code_root), mode, str(reg.ws.root), reg.project_id,
            str(reg.ws.db_path), str(reg.assets_root)]
    load = os.getloadavg()[0]
    proc = subprocess.run(args, capture_output=True, text=True, check=True,
                          env=dict(os.environ, COMFYVN_HOME=str(reg.ws.root)))
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "loadavg_before": round(load, 2)}


def bench_audit(sizes: list[int], work: Path, old_code: Path | None) -> dict:
    """The enforcer's audit (re-hashing every file) of n assets whose files and sidecars are on disk
    (tiny files), each run in its own process for its peak memory: the streaming audit, a bare
    script (hash each file, parse each sidecar) and, given ``old_code`` (a checkout of the code
    before the streaming audit), the old audit."""
    out: dict[str, Any] = {}
    for n in sizes:
        reg = bigregistry.open_registry(n, work / f"audit_{n}")
        t0 = time.perf_counter()
        bigregistry.materialise(reg)
        made_s = time.perf_counter() - t0
        reg.db.close()
        r: dict[str, Any] = {"assets": n, "materialise_s": round(made_s, 1)}
        modes = ["baseline", "streaming"] + (["old"] if old_code is not None and n <= 100_000 else [])
        for mode in modes:
            r[mode] = run_audit_child("audit" if mode == "old" else mode, reg,
                                      old_code if mode == "old" else HERE.parent)
            print(f"  audit {n:,} {mode}: {r[mode]}", flush=True)
        out[str(n)] = r
        shutil.rmtree(work / f"audit_{n}", ignore_errors=True)
    return out


# ------------------------------------------------------------------------------ PostgreSQL (issue 18)
PG_SHARED_BUFFERS = "2GB"
ASSET_COLUMNS = ("project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at, updated_at,"
                 " meta, preview, provenance, search_text, sidecar_pending, license_terms, commercial_rank,"
                 " credit_required, derivatives_allowed, license_known, rights_version")


def build_pg_registry(cluster: Any, n: int, seed: int = 7) -> tuple[str, float]:
    """A database of n assets on the cluster, the same rows as the SQLite cache: the schema by the
    store's own migrations, rows by COPY with the secondary indexes dropped and re-created, then
    VACUUM ANALYZE (what autovacuum does soon after a bulk load)."""
    import psycopg

    from comfyvn.store.db import Database

    started = time.perf_counter()
    url = cluster.create_database(f"registry_{n}")
    Database(url).close()  # every migration, translated for PostgreSQL
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('assets', 'asset_tags')"
                               " AND indexname NOT IN (SELECT conname FROM pg_constraint)").fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        with conn.cursor() as cur:
            with cur.copy(f"COPY assets ({ASSET_COLUMNS}) FROM STDIN") as copy:
                for row, _ in bigregistry.generate(n, seed):
                    copy.write_row(row)
            with cur.copy("COPY asset_tags (project_id, uid, tag, type, license, created_at) FROM STDIN") as copy:
                for _, tags in bigregistry.generate(n, seed):
                    for tag_row in tags:
                        copy.write_row(tag_row)
        for _, sql in indexes:
            conn.execute(sql)
        # VACUUM too, as autovacuum does after a bulk insert: without the visibility map an index-only
        # probe of asset_tags still reads the heap, and the planner then prefers (project_id, uid)
        conn.execute("VACUUM ANALYZE assets")
        conn.execute("VACUUM ANALYZE asset_tags")
        # into shared buffers, as SQLite's file is in the page cache after its copy
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute("SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                     " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i')")
    return url, time.perf_counter() - started


def pg_page_plans(reg: AssetRegistry, combos: list[tuple[str, str, str]]) -> dict:
    """EXPLAIN (ANALYZE, BUFFERS) of PostgreSQL page queries as Records sends them: before
    registry.007_tag_copies (the late row lookup over assets' index and the tag's primary key) and
    now (one range of an asset_tags index, in page order)."""
    import re

    conn = reg.db.conn
    conn_type = type(conn)
    real = conn_type.execute
    out: dict[str, Any] = {}
    for label, tag_order in (("before", False), ("tag_order", True)):
        records = Records.of(reg)
        records.tag_order = tag_order
        rows: list[dict] = []
        for kind, tag, lic in combos:
            sent: list[tuple[str, Any]] = []

            def recording(self, sql, parameters=(), /, sent=sent):
                sent.append((sql, parameters))
                return real(self, sql, parameters)

            conn_type.execute = recording
            try:
                records.query_assets(asset_type=kind, tags=[tag], license=lic, limit=50)
            finally:
                conn_type.execute = real
            sql, params = next((q, v) for q, v in sent if q.startswith("SELECT a.*"))
            lines = [r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()]
            text = "\n".join(lines)
            buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", text)
            rows.append({"tag": tag, "ms": float(re.search(r"Execution Time: ([\d.]+)", text).group(1)),
                         "shared_hit": int(buffers.group(1)) if buffers else 0,
                         "shared_read": int(buffers.group(2) or 0) if buffers else 0,
                         "heap_fetches": sum(int(x) for x in re.findall(r"Heap Fetches: (\d+)", text)),
                         "workers": sum(int(x) for x in re.findall(r"Workers Launched: (\d+)", text)),
                         "plan": lines})
        slowest = max(rows, key=lambda r: r["ms"])
        out[label] = {key: statistics.median(r[key] for r in rows)
                      for key in ("ms", "shared_hit", "shared_read", "heap_fetches", "workers")}
        out[label]["max_ms"] = slowest["ms"]
        out[label]["slowest_plan"] = slowest["plan"]
        out[label]["queries"] = len(rows)
    return out


# what registry.007_tag_copies adds to each write: two indexes of asset_tags and two triggers.  "before"
# registries drop them (the tag rows keep their three unindexed copy columns, which the write path fills)
TAG_COPY_WRITE_COST = {
    "sqlite": ["DROP TRIGGER assets_tag_copies_update", "DROP TRIGGER asset_tags_copies_insert",
               "DROP INDEX asset_tags_type_license_created", "DROP INDEX asset_tags_created"],
    "postgresql": ["DROP TRIGGER assets_tag_copies_update ON assets", "DROP TRIGGER asset_tags_copies_insert ON asset_tags",
                   "DROP INDEX asset_tags_type_license_created", "DROP INDEX asset_tags_created"],
}


def without_tag_copies(reg: AssetRegistry) -> AssetRegistry:
    with reg.db.transaction() as conn:
        for statement in TAG_COPY_WRITE_COST[reg.db.engine]:
            conn.execute(statement)
    return reg


def registry_on(url: str, root: Path, project: str = bigregistry.PROJECT, **config: Any) -> AssetRegistry:
    ws = init_workspace(workspace(root))
    update_config({"store": {"url": url}, **config}, ws)
    return AssetRegistry(project, ws=ws, make_thumbnails=False)


def bench_engines(sizes: list[int], queries: int, rounds: int, files: int, work: Path, rng: random.Random) -> dict:
    """The same list_assets bench on SQLite and PostgreSQL, and registering small files on both."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    import psycopg
    from pgserver import start_cluster

    out: dict[str, Any] = {"list_assets": {}, "register": None}
    cluster = start_cluster()
    try:
        # a server sized for its data: the default 128 MB of shared buffers hold a tenth of a million
        # assets, and every page read past them is a system call (20-90 ms for a rare tag's page)
        cluster.psql(f"ALTER SYSTEM SET shared_buffers = '{PG_SHARED_BUFFERS}'")
        cluster.restart()
        out["postgresql"] = (cluster.psql("SHOW server_version") + f", shared_buffers {PG_SHARED_BUFFERS}"
                             " (test cluster: fsync=off, synchronous_commit=off)")
        types, lics = list(bigregistry.TYPES), [x for x in bigregistry.LICENCES if x]
        for n in sizes:
            url, built_s = build_pg_registry(cluster, n)
            print(f"  PostgreSQL registry of {n:,} built by COPY in {built_s:.0f} s", flush=True)
            with psycopg.connect(url) as conn:  # the visibility map index-only scans rely on
                res_vm = conn.execute("SELECT relname, relallvisible, relpages FROM pg_class"
                                      " WHERE relname IN ('assets', 'asset_tags')").fetchall()
            print(f"  all-visible pages after VACUUM: {res_vm}", flush=True)
            combos = [(rng.choice(types), rng.choice(bigregistry.TAGS[:100]), rng.choice(lics))
                      for _ in range(queries)]
            regs = {"sqlite": bigregistry.open_registry(n, work / f"eng_sqlite_{n}"),
                    "postgresql": registry_on(url, work / f"eng_pg_{n}")}
            for reg in regs.values():  # warm caches
                for kind, tag, lic in combos[:30]:
                    reg.query_assets(asset_type=kind, tags=[tag], license=lic, limit=50)
            res: dict[str, Any] = {"pg_build_s": round(built_s, 1), "pg_all_visible": res_vm}
            for r in range(rounds):  # alternate the engines round by round
                for engine in (("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite")):
                    part = page_rounds(regs[engine], combos, 1)
                    res.setdefault(engine, []).append(part)
            for engine in ("sqlite", "postgresql"):
                parts = res[engine]
                res[engine] = {key: statistics.median(p["page"]["list_assets"][key] for p in parts)
                               for key in ("p50_ms", "p95_ms")}
                res[engine]["bare_sql_p95_ms"] = statistics.median(p["page"]["bare_sql"]["p95_ms"] for p in parts)
                res[engine]["cpu_p50_ms"] = statistics.median(p["page_cpu"]["list_assets"]["p50_ms"] for p in parts)
                res[engine]["cpu_p95_ms"] = statistics.median(p["page_cpu"]["list_assets"]["p95_ms"] for p in parts)
                # the form before registry.007_tag_copies, in the same rounds
                res[engine]["before"] = {key: statistics.median(p["page"]["before"][key] for p in parts)
                                         for key in ("p50_ms", "p95_ms")}
                res[engine]["before"].update({f"cpu_{key}": statistics.median(
                    p["page_cpu"]["before"][key] for p in parts) for key in ("p50_ms", "p95_ms")})
                res[engine]["loadavg"] = [x for p in parts for x in p["loadavg"]]
                records = Records.of(regs[engine])
                res[engine]["count_tag_capped_ms"] = round(timed_ms(lambda r=records: r.query_assets(
                    tags=["tag003"], limit=1, with_total=True, total_cap=10_000))[0], 1)
                res[engine]["select_all_ids_ms"] = round(timed_ms(lambda r=records: r.matching_uids(
                    asset_type="backgrounds"))[0], 1)
                print(f"  {engine} {n:,}: list_assets p50 {res[engine]['p50_ms']} / p95 {res[engine]['p95_ms']} ms "
                      f"(bare SQL p95 {res[engine]['bare_sql_p95_ms']} ms), select all ids "
                      f"{res[engine]['select_all_ids_ms']} ms, load {res[engine]['loadavg']}, CPU p50/p95 "
                      f"{res[engine]['cpu_p50_ms']}/{res[engine]['cpu_p95_ms']} ms"
                      + f", before (no tag copies) {res[engine]['before']}", flush=True)
            res["postgresql"]["plans"] = plans = pg_page_plans(regs["postgresql"], combos[:40])
            for label, summary in plans.items():
                print(f"  EXPLAIN ANALYZE {label} ({summary['queries']} queries, medians): {summary['ms']} ms "
                      f"(max {summary['max_ms']}), shared hit {summary['shared_hit']} read {summary['shared_read']}, "
                      f"heap fetches {summary['heap_fetches']}, workers {summary['workers']}", flush=True)
                print("    slowest: " + "\n    ".join(summary["slowest_plan"]), flush=True)
            out["list_assets"][str(n)] = res
            regs["postgresql"].db.close()  # its pool's sessions gone before the next size's VACUUM
        if not files:
            return out
        # register small files: the same files, slices alternating between the engines, each with and
        # without what the tag copies add to a write (tags on every file, as a gallery's imports have)
        sources = make_sources(work / "eng_sources", files, rng)
        regs = {"sqlite": registry_on("", work / "eng_reg_sqlite", "bench", registry={"fsync": False}),
                "sqlite_before": without_tag_copies(registry_on("", work / "eng_reg_sqlite_before", "bench",
                                                                registry={"fsync": False})),
                "postgresql": registry_on(cluster.create_database("register"), work / "eng_reg_pg", "bench",
                                          registry={"fsync": False}),
                "postgresql_before": without_tag_copies(registry_on(cluster.create_database("register_before"),
                                                                    work / "eng_reg_pg_before", "bench",
                                                                    registry={"fsync": False}))}
        load_before = os.getloadavg()[0]
        wall, cpu = _interleaved({name: (lambda chunk, i, r=reg: [r.register_file(
            p, "models", tags=["imported", f"batch{i}", p.stem[-1]], license_tag="cc0") for p in chunk])
            for name, reg in regs.items()}, sources, 10, rng)
        assert all(reg.count() == files for reg in regs.values())
        out["register"] = {"files": files, "registry.fsync": False, "tags_per_file": 3,
                           "loadavg": [load_before, os.getloadavg()[0]],
                           "ms_per_file": {k: round(v / files * 1000, 3) for k, v in wall.items()},
                           "client_cpu_ms_per_file": {k: round(v / files * 1000, 3) for k, v in cpu.items()},
                           "ratio_pg_vs_sqlite": round(wall["postgresql"] / wall["sqlite"], 2),
                           "ratio_after_vs_before": {e: round(wall[e] / wall[f"{e}_before"], 3)
                                                     for e in ("sqlite", "postgresql")},
                           "cpu_ratio_after_vs_before": {e: round(cpu[e] / cpu[f"{e}_before"], 3)
                                                         for e in ("sqlite", "postgresql")}}
        print(f"  register {files:,} small files: {out['register']['ms_per_file']} ms/file, client CPU "
              f"{out['register']['client_cpu_ms_per_file']}, after/before {out['register']['ratio_after_vs_before']}"
              f" (CPU {out['register']['cpu_ratio_after_vs_before']}), load {out['register']['loadavg']}", flush=True)
    finally:
        cluster.destroy()
    return out


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 files / 10,000 assets")
    ap.add_argument("--files", type=int, default=None)
    ap.add_argument("--assets", type=int, default=None)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--scale", default=None, help="comma-separated registry sizes, e.g. 100000,1000000: "
                    "only the scale benches (results: registry_scale.json)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the scale page queries")
    ap.add_argument("--server", action="store_true", help="with --scale: also a jupyter server answering /assets")
    ap.add_argument("--audit", action="store_true", help="with --scale: the enforcer's audit (files on disk)")
    ap.add_argument("--old-code", type=Path, default=None,
                    help="with --audit: a checkout of the code before the streaming audit, run beside it")
    ap.add_argument("--no-pages", action="store_true", help="with --scale: skip the query benches")
    ap.add_argument("--fulltext", action="store_true",
                    help="with --scale: free text with the index against the LIKE scan, and registering --files "
                         "small files with and without the index's triggers")
    ap.add_argument("--fulltext-pg", action="store_true",
                    help="with --scale: the free-text bench on PostgreSQL (a throw-away cluster)")
    ap.add_argument("--engines", action="store_true",
                    help="with --scale: the page bench on SQLite and PostgreSQL side by side, and registering "
                         "--files small files on both (a throw-away PostgreSQL cluster, tests/pgserver.py)")
    args = ap.parse_args(argv)
    if args.scale:
        return main_scale(args)
    args.out = args.out or str(HERE / "results" / "registry.json")
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


def main_scale(args: argparse.Namespace) -> int:
    sizes = [int(x) for x in args.scale.split(",")]
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"bench": "registry_scale", "python": platform.python_version(),
                              "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
                              "sizes": {}, "server": {}}
    for n in sizes:
        bigregistry.cached_db(n)  # built (once) before anything is timed
    with tempfile.TemporaryDirectory(prefix="comfyvn-bench-scale-") as tmp:
        for n in [] if args.no_pages else sizes:
            r = result["sizes"][str(n)] = bench_scale_one(n, args.queries, args.rounds, Path(tmp), rng)
            p, c = r["page"], r["page_cpu"]
            print(f"{n:,} assets (load {r['loadavg']}): list_assets type+tag+licence p50 "
                  f"{p['list_assets']['p50_ms']} / p95 {p['list_assets']['p95_ms']} ms vs bare SQL "
                  f"{p['bare_sql']['p50_ms']} / {p['bare_sql']['p95_ms']} ms (x{p['ratio_p50']} wall, "
                  f"x{c['ratio_p50']} CPU); next page p95 {p['next_page'].get('p95_ms')} ms", flush=True)
            for label, cnt in r["counts_ms"].items():
                print(f"  count {label} ({cnt['matches']:,}): exact {cnt['exact']} ms, capped {cnt['capped_10000']} "
                      f"ms, bare COUNT(*) {cnt['bare_count']} ms", flush=True)
            s = r["select_all"]
            print(f"  select all {s['matching']:,}: ids {s['matching_uids']} ms, bare SELECT uid "
                  f"{s['bare_select_uid']} ms, old page walk {s['old_page_walk_ms']} ms", flush=True)
            for label, plan in r["plans"].items():
                print(f"  plan {label}: {plan}", flush=True)
        if args.server:
            for n in sizes:
                r = result["server"][str(n)] = bench_server(n, args.queries, Path(tmp), rng)
                print(f"server on {n:,} assets: GET /assets p50 {r['http']['p50_ms']} / p95 {r['http']['p95_ms']} "
                      f"ms; RSS after start {r['server_rss_kib_after_start']} KiB, after "
                      f"{r['requests']} requests {r['server_rss_kib_after_requests']} KiB (load {r['loadavg']})",
                      flush=True)
        if args.fulltext:
            result["fulltext"] = {}
            for n in sizes:
                r = result["fulltext"][str(n)] = bench_fulltext(n, args.rounds, Path(tmp))
                print(f"free text on {n:,} assets (load {r['loadavg']}), median ms index / LIKE scan (CPU):",
                      flush=True)
                for label, row in r["queries"].items():
                    cells = "; ".join(f"{m} {c['index']} / {c['like_scan']} ({c['index_cpu']} / {c['like_scan_cpu']})"
                                      for m, c in row.items() if isinstance(c, dict))
                    print(f"  {label!r} ({row['matches']:,}): {cells}", flush=True)
            if args.fulltext_pg:
                result["fulltext"]["postgresql"] = bench_fulltext_pg(sizes, args.rounds, Path(tmp))
                for n, r in result["fulltext"]["postgresql"].items():
                    print(f"PostgreSQL free text on {int(n):,} assets (load {r['loadavg']}), median ms index / "
                          f"LIKE scan (CPU):", flush=True)
                    for label, row in r["queries"].items():
                        cells = "; ".join(f"{m} {c['index']} / {c['like_scan']}" for m, c in row.items()
                                          if isinstance(c, dict))
                        print(f"  {label!r} ({row['matches']:,}): {cells}", flush=True)
            if args.files != 0:
                r = result["fulltext"]["register"] = bench_register_fulltext(
                    args.files or 10_000, 10, Path(tmp), rng)
                print(f"register {r['files']} files (load {r['loadavg']}): ms/file {r['ms_per_file']}, CPU "
                      f"{r['cpu_ms_per_file']}; with / without the index {r['index_cost']}x wall, "
                      f"{r['index_cost_cpu']}x CPU", flush=True)
        if args.audit:
            result["audit"] = bench_audit(sizes, Path(tmp), args.old_code)
        if args.engines:
            result["engines"] = bench_engines(sizes, args.queries, args.rounds, 10_000 if args.files is None
                                              else args.files, Path(tmp), rng)
    out = Path(args.out or HERE / "results" / "registry_scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
