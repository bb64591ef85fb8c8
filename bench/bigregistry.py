"""A large asset registry for benchmarks, built fast and cached (issue 19: a million assets).

:func:`cached_db` builds ``n`` asset rows once into a SQLite file under
``/tmp/comfyvn-bench-cache`` (``$COMFYVN_BENCH_CACHE``), keyed by the schema version (a digest
of every migration) and the generator's settings, so a schema change rebuilds it and nothing
else does.  The rows go through the registry's own schema (``Database.migrate``) and its own
row codec (:class:`comfyvn.registry.records.Records`: search text, rights columns); the secondary
indexes are dropped during the bulk insert and re-created afterwards (one sort each instead of a
million random index inserts), which is what makes 1,000,000 rows take about a minute.

The distribution is skewed the way real registries are: types weighted (sprites and
backgrounds most, models few), 1-4 tags per asset from 400 tags with Zipf-like weights (a few
common, a long tail), licences weighted (a fifth unlicensed), assets spread over folders of
1,000.  Files are tiny (24-200 bytes, deterministic content, their real SHA-256), so
:func:`materialise` can put every file and its sidecar on disk for the enforcer audit.

    registry = open_registry(1_000_000, workdir)   # a private copy of the cached database
    materialise(registry)                          # files + sidecars (for the audit)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from comfyvn import rights  # noqa: E402
from comfyvn.config import init_workspace, workspace  # noqa: E402
from comfyvn.registry.records import RIGHTS_VERSION, Records  # noqa: E402
from comfyvn.registry.sidecars import Sidecars  # noqa: E402
from comfyvn.store.db import Database  # noqa: E402
from comfyvn.store.migrations import MIGRATIONS  # noqa: E402
from comfyvn.studio.core.asset_registry import AssetRegistry  # noqa: E402

PROJECT = "bench"
GENERATOR_VERSION = 1  # bump when the rows generated change
TYPES = {"sprites": 34, "backgrounds": 24, "audio": 14, "voices": 8, "models": 6, "docs": 5, "scenes": 9}
LICENCES = {"cc0": 22, "cc-by-4.0": 20, "cc-by-sa-4.0": 9, "mit": 6, "creativeml-openrail-m": 8,
            "cc-by-nc-4.0": 7, "proprietary": 8, None: 20}
TAGS = [f"tag{i:03d}" for i in range(400)]
TAG_WEIGHTS = [1 / (i + 1) ** 0.9 for i in range(len(TAGS))]
CACHE = Path(os.environ.get("COMFYVN_BENCH_CACHE", "/tmp/comfyvn-bench-cache"))


def schema_key() -> str:
    """A digest of every migration (name and SQL): a schema change means a new cache file."""
    text = json.dumps([[name, sql] for name, sql in MIGRATIONS], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_path(n: int, seed: int = 7) -> Path:
    return CACHE / f"registry-{schema_key()}-g{GENERATOR_VERSION}-n{n}-s{seed}.sqlite"


def content(i: int) -> bytes:
    """The bytes of asset ``i`` (tiny, deterministic, distinct)."""
    line = f"comfyvn bench asset {i}\n".encode()
    return line * (1 + i % 7)


def generate(n: int, seed: int = 7):
    """Yield ``(asset row, tag rows)`` in the registry's column order (Records.insert; a tag row is
    ``(project_id, uid, tag, type, license, created_at)``: registry.007_tag_copies)."""
    rng = random.Random(seed)
    types, type_w = list(TYPES), list(TYPES.values())
    lics, lic_w = list(LICENCES), list(LICENCES.values())
    start = 1_700_000_000.0
    for i in range(n):
        data = content(i)
        digest = hashlib.sha256(data).hexdigest()
        kind = rng.choices(types, type_w)[0]
        lic = rng.choices(lics, lic_w)[0]
        tags = sorted(set(rng.choices(TAGS, TAG_WEIGHTS, k=rng.randint(1, 4))))
        created = start + i * 0.5 + rng.random() * 0.25  # registration order, a few per second
        rec = {"uid": digest[:16], "type": kind, "path": f"{kind}/{i // 1000:04d}/asset_{i:07d}.bin",
               "hash": digest, "bytes": len(data), "tags": tags, "license": lic, "origin": "local", "version": 1,
               "created_at": created, "updated_at": created, "meta": {"title": f"Asset {i}"},
               "preview": {"kind": None}, "provenance": {"source": "bench"},
               "license_terms": rights.asset_rights(lic)}
        row = (PROJECT, rec["uid"], kind, rec["path"], digest, rec["bytes"], json.dumps(tags), lic, "local", 1,
               created, created, json.dumps(rec["meta"]), json.dumps(rec["preview"]), json.dumps(rec["provenance"]),
               Records.search_text(rec), 0, *Records.rights_columns(rec), RIGHTS_VERSION)
        yield row, [(PROJECT, rec["uid"], t, kind, lic, created) for t in tags]


def build(path: Path, n: int, seed: int = 7, *, log=print) -> Path:
    """Write ``n`` rows into a new database at ``path`` (atomically: a temp file renamed)."""
    tmp = path.with_suffix(".building")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    started = time.monotonic()
    db = Database(tmp)  # the registry's schema, every migration applied
    db.close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                           " AND tbl_name IN ('assets', 'asset_tags')").fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    # the search index's triggers would index row by row: dropped too, the index built in one pass below
    triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'assets'"
                            ).fetchall()
    for name, _ in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    cols = ("project_id, uid, type, path, hash, bytes, tags, license, origin, version, created_at, updated_at, meta,"
            " preview, provenance, search_text, sidecar_pending, license_terms, commercial_rank, credit_required,"
            " derivatives_allowed, license_known, rights_version")
    insert = f"INSERT INTO assets({cols}) VALUES ({','.join('?' * 23)})"
    conn.execute("BEGIN")
    rows, tag_rows = [], []
    for i, (row, tags) in enumerate(generate(n, seed), 1):
        rows.append(row)
        tag_rows.extend(tags)
        if len(rows) == 50_000 or i == n:
            conn.executemany(insert, rows)
            conn.executemany("INSERT INTO asset_tags(project_id, uid, tag, type, license, created_at)"
                             " VALUES (?,?,?,?,?,?)", tag_rows)
            rows, tag_rows = [], []
            log(f"  {i:,} rows ({time.monotonic() - started:.0f} s)")
    conn.execute("COMMIT")
    for _name, sql in indexes:
        conn.execute(sql)
    log(f"  indexes re-created ({time.monotonic() - started:.0f} s)")
    if triggers:  # registry.006_fulltext: FTS5 reads every row's search_text once, then the triggers return
        conn.execute("INSERT INTO assets_fts(assets_fts) VALUES ('rebuild')")
        for _name, sql in triggers:
            conn.execute(sql)
        log(f"  search index built ({time.monotonic() - started:.0f} s)")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    os.replace(tmp, path)
    Path(f"{tmp}.migrate.lock").unlink(missing_ok=True)
    return path


def cached_db(n: int, seed: int = 7, *, log=print) -> Path:
    """The cached database of ``n`` assets (built the first time, minutes for a million)."""
    path = cache_path(n, seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"building {n:,} assets into {path} (cached for later runs)")
        build(path, n, seed, log=log)
    return path


def open_registry(n: int, root: Path, *, seed: int = 7, log=print) -> AssetRegistry:
    """A registry of ``n`` assets in a new workspace at ``root`` (a copy of the cached database)."""
    ws = init_workspace(workspace(root))
    src = cached_db(n, seed, log=log)
    ws.db_path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("-wal", "-shm"):
        Path(f"{ws.db_path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(src, ws.db_path)
    return AssetRegistry(PROJECT, ws=ws, make_thumbnails=False)


def materialise(reg: AssetRegistry, *, log=print) -> int:
    """Every asset's file (its registered bytes) and sidecar on disk; returns how many."""
    started = time.monotonic()
    made: set[Path] = set()
    done = 0
    conn = reg.db.new_connection()
    for row in conn.execute("SELECT * FROM assets WHERE project_id = ?", (reg.project_id,)):
        rec = Records.decode(row)
        path = reg.assets_root / rec["path"]
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        i = int(path.stem.rsplit("_", 1)[1])
        path.write_bytes(content(i))
        reg.sidecar_path_for(rec["path"]).write_text(json.dumps(Sidecars.document(rec), ensure_ascii=False))
        done += 1
        if done % 100_000 == 0:
            log(f"  {done:,} files and sidecars ({time.monotonic() - started:.0f} s)")
    conn.close()
    return done


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="build (or find) the cached benchmark registry")
    ap.add_argument("n", type=int, nargs="?", default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    t0 = time.monotonic()
    print(cached_db(args.n, args.seed), f"({time.monotonic() - t0:.0f} s)")
