"""A tag's rows carry copies of their asset's type, licence and created_at (registry.007_tag_copies):
the copies follow every write, the migration fills them for rows registered before it, and a
one-tag page read from them (one index range in page order) is the page of the form before.

Runs on both engines (``COMFYVN_TEST_STORE=postgresql``)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from sqltrace import traced

import comfyvn.store.base as storebase
from comfyvn.registry.records import Records
from comfyvn.store.migrations import MIGRATIONS
from comfyvn.studio.core.asset_registry import AssetRegistry

TYPES = ("sprites", "audio", "docs")
LICENCES = ("cc0", "mit", None)
TAGS = ("red", "blue", "hero", "night", "rare")


def make_file(folder: Path, name: str, data: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    return path


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry(project_id="tagorder", make_thumbnails=False)


@pytest.fixture
def src(tmp_path) -> Path:
    return tmp_path / "incoming"


def tag_rows(reg: AssetRegistry) -> set[tuple]:
    return {tuple(r) for r in reg.db.query("SELECT uid, tag, type, license, created_at FROM asset_tags"
                                           " WHERE project_id = ?", (reg.project_id,))}


def expected_rows(reg: AssetRegistry) -> set[tuple]:
    """What asset_tags must hold: one row per (asset, tag) with the asset's own type, licence, created_at."""
    rows = Records.of(reg).list_assets(sort="uid", descending=False)
    return {(r["uid"], t, r["type"], r["license"], r["created_at"]) for r in rows for t in r["tags"]}


def register(reg: AssetRegistry, src: Path, rng: random.Random, i: int) -> dict:
    return reg.register_file(make_file(src, f"f{i}.bin", f"file {i} {rng.random()}"), rng.choice(TYPES),
                             tags=rng.sample(TAGS, rng.randint(0, 3)), license_tag=rng.choice(LICENCES),
                             created_at=1000.0 + rng.randint(0, 40) * 0.5)  # ties in created_at on purpose


def test_the_copies_follow_every_kind_of_write(reg, src):
    rng = random.Random(18)
    uids = [register(reg, src, rng, i)["uid"] for i in range(24)]
    batch = reg.register_files([{"source_path": make_file(src, f"b{i}.bin", f"batch {i}"), "asset_type": "docs",
                                 "tags": ["night", "blue"][: i % 3], "license_tag": "mit"} for i in range(5)])
    uids += [r["uid"] for r in batch if isinstance(r, dict)]
    assert len(uids) == 29
    assert tag_rows(reg) == expected_rows(reg)
    for step in range(120):  # random edits through every write path, the copies checked after each
        uid = rng.choice(uids)
        kind = rng.randrange(8)
        if kind == 0:
            reg.update_asset_meta(uid, add_tags=rng.sample(TAGS, 2), remove_tags=[rng.choice(TAGS)])
        elif kind == 1:
            reg.update_asset_meta(uid, license_tag=rng.choice(("cc0", "mit", "cc-by-4.0", None)))
        elif kind == 2:
            reg.update_asset_meta(uid, {"license": rng.choice(("cc0", "", "proprietary")),
                                        "tags": rng.sample(TAGS, rng.randint(0, 4)), "note": step})
        elif kind == 3:
            reg.bulk_update_tags(rng.sample(uids, 4), add_tags=[rng.choice(TAGS)], remove_tags=[rng.choice(TAGS)],
                                 license_tag=rng.choice(("cc0", None, "mit")))
        elif kind == 4:  # a write outside the registry's code: the database's trigger follows it
            with reg.db.transaction() as conn:
                conn.execute("UPDATE assets SET type = ?, license = ?, created_at = ? WHERE project_id = ? AND uid = ?",
                             (rng.choice(TYPES), rng.choice(LICENCES), 2000.0 + step, reg.project_id, uid))
        elif kind == 5:  # a tag row written without its copies (as before the migration): filled from its asset
            with reg.db.transaction() as conn:
                conn.execute("INSERT INTO asset_tags(project_id, uid, tag) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                             (reg.project_id, uid, f"raw{step}"))
                conn.execute("UPDATE assets SET tags = ? WHERE project_id = ? AND uid = ?",
                             (json.dumps(sorted({*reg.get_asset(uid)["tags"], f"raw{step}"})), reg.project_id, uid))
        elif kind == 6 and len(uids) > 10:
            assert reg.remove_asset(uid)
            uids.remove(uid)
        else:
            uids.append(register(reg, src, rng, 1000 + step)["uid"])
        assert tag_rows(reg) == expected_rows(reg), (step, kind)


def test_the_update_trigger_moves_only_changed_rows_and_other_projects_stay(reg, src):
    other = AssetRegistry(project_id="other", make_thumbnails=False)
    data = make_file(src, "same.bin", "same bytes in two projects")
    mine = reg.register_file(data, "sprites", tags=["red", "hero"], license_tag="cc0", created_at=5.0)
    theirs = other.register_file(data, "sprites", tags=["red"], license_tag="cc0", created_at=5.0)
    assert mine["uid"] == theirs["uid"]
    with reg.db.transaction() as conn:
        conn.execute("UPDATE assets SET license = 'mit', type = 'audio' WHERE project_id = ? AND uid = ?",
                     (reg.project_id, mine["uid"]))
    assert tag_rows(reg) == {(mine["uid"], "red", "audio", "mit", 5.0), (mine["uid"], "hero", "audio", "mit", 5.0)}
    assert tag_rows(other) == {(theirs["uid"], "red", "sprites", "cc0", 5.0)}


def test_the_migration_fills_the_copies_of_rows_written_before_it(ws, monkeypatch):
    before = [m for m in MIGRATIONS if m[0] != "registry.007_tag_copies"]
    assert len(before) == len(MIGRATIONS) - 1
    monkeypatch.setattr(storebase, "MIGRATIONS", before)
    old = AssetRegistry(project_id="old", make_thumbnails=False)
    assert "registry.007_tag_copies" not in old.db.applied_migrations()
    rows = [("old", f"{i:016x}", ("sprites", "audio")[i % 2], f"f/{i}.bin", f"{i:064x}", 1, '["a", "b"]',
             (None, "cc0", "mit")[i % 3], 1000.0 + i) for i in range(12)]
    with old.db.transaction() as conn:  # as the registry wrote them before the migration
        conn.executemany("INSERT INTO assets(project_id, uid, type, path, hash, bytes, tags, license, created_at,"
                         " updated_at) VALUES (?,?,?,?,?,?,?,?,?,0)", rows)
        conn.executemany("INSERT INTO asset_tags(project_id, uid, tag) VALUES (?,?,?)",
                         [("old", r[1], t) for r in rows for t in ("a", "b")])
    monkeypatch.setattr(storebase, "MIGRATIONS", MIGRATIONS)
    assert old.db.migrate() == ["registry.007_tag_copies"]
    assert tag_rows(old) == {(r[1], t, r[2], r[7], r[8]) for r in rows for t in ("a", "b")}
    page = Records.of(old).query_assets(tags=["a"], asset_type="audio", license="mit", limit=50)
    assert [r["uid"] for r in page["items"]] == [r[1] for r in sorted(rows, key=lambda r: -r[8])
                                                  if r[2] == "audio" and r[7] == "mit"]


def pages(records: Records, *, limit: int, **filters) -> list[list[str]]:
    """Every page of a filter through the keyset cursor (uids)."""
    out, cursor = [], None
    while True:
        page = records.query_assets(limit=limit, cursor=cursor, **filters)
        out.append([r["uid"] for r in page["items"]])
        cursor = page["next_cursor"]
        if not cursor:
            return out


@pytest.fixture
def populated(reg, src) -> AssetRegistry:
    rng = random.Random(7)
    for i in range(60):
        register(reg, src, rng, i)
    return reg


FILTERS = [{"tags": ["red"]}, {"tags": ["hero"], "asset_type": "sprites"}, {"tags": ["blue"], "license": "cc0"},
           {"tags": ["night"], "asset_type": "audio", "license": "mit"}, {"tags": ["red"], "license": ""},
           {"tags": ["rare"], "asset_type": "docs", "license": ""}, {"tags": ["nothing"], "asset_type": "audio"},
           {"tags": "hero", "tags_mode": "any", "asset_type": "docs"}]


@pytest.mark.parametrize("filters", FILTERS)
def test_tag_ordered_pages_are_the_pages_of_the_form_before(populated, filters):
    new, old = Records.of(populated), Records.of(populated)
    old.tag_order = False
    assert new.filter_sql(**filters).tag_ordered("created_at")
    for desc in (True, False):
        for limit in (1, 3, 7, 50):
            assert pages(new, limit=limit, descending=desc, **filters) == pages(old, limit=limit, descending=desc,
                                                                                **filters)
        for offset in (0, 2, 9):
            assert new.query_assets(limit=4, offset=offset, descending=desc, with_total=True, **filters) == \
                old.query_assets(limit=4, offset=offset, descending=desc, with_total=True, **filters)
            assert new.query_assets(limit=4, offset=offset, descending=desc, with_total=True, total_cap=3,
                                    **filters) == old.query_assets(limit=4, offset=offset, descending=desc,
                                                                   with_total=True, total_cap=3, **filters)
        assert new.matching_uids(descending=desc, **filters) == old.matching_uids(descending=desc, **filters)
        assert new.matching_uids(descending=desc, limit=5, **filters) == old.matching_uids(descending=desc, limit=5,
                                                                                            **filters)
    with traced(populated.db) as statements:
        new.query_assets(limit=5, **filters)
    assert any(" FROM asset_tags a WHERE " in s and "JOIN assets a" in s for s in statements), statements


def test_other_filters_and_sorts_keep_the_form_before(populated):
    records = Records.of(populated)
    for filters in ({"tags": ["red", "hero"]}, {"tags": ["red"], "commercial_use": "sell"}, {"tags": ["red"],
                    "text": "file"}, {"tags": ["red", "blue"], "tags_mode": "any"}, {"asset_type": "audio"}):
        assert not records.filter_sql(**filters).tag_ordered("created_at"), filters
    assert not records.filter_sql(tags=["red"]).tag_ordered("updated_at")
    old = Records.of(populated)
    old.tag_order = False
    for sort in ("updated_at", "path", "bytes", "type", "uid"):
        assert pages(records, limit=4, sort=sort, tags=["red"]) == pages(old, limit=4, sort=sort, tags=["red"])


def test_cursor_pages_match_the_form_before_while_assets_arrive(populated, src):
    new, old = Records.of(populated), Records.of(populated)
    old.tag_order = False
    assert new.filter_sql(tags=["red"], asset_type="sprites").tag_ordered("created_at")
    rng = random.Random(3)
    original = [r["uid"] for r in populated.list_assets(tags=["red"], asset_type="sprites")]
    assert len(original) >= 4
    cursors: list[str | None] = [None, None]
    seen: list[str] = []
    for i in range(40):
        a, b = (records.query_assets(tags=["red"], asset_type="sprites", limit=2, cursor=cur)
                for records, cur in zip((new, old), cursors, strict=True))
        assert a == b, i
        seen += [r["uid"] for r in a["items"]]
        if not a["next_cursor"]:
            break
        cursors = [a["next_cursor"], b["next_cursor"]]
        boundary = a["items"][-1]["created_at"]
        for j, created in enumerate((9000.0 + i, boundary, boundary - 0.25)):  # newer, a tie, just older
            populated.register_file(make_file(src, f"late{i}_{j}.bin", f"late {i} {j} {rng.random()}"), "sprites",
                                    tags=["red"], license_tag="cc0", created_at=created)
    assert len(seen) == len(set(seen)) and set(original) <= set(seen)  # none twice, every first-seen asset
    final = [r["uid"] for r in populated.list_assets(tags=["red"], asset_type="sprites")]
    assert [u for u in final if u in set(seen)] == seen  # in the order of the registry as it is now


def inner_page(statement: str) -> str:
    """The page's own query (its uids in order) inside the late row lookup."""
    start = statement.index("(SELECT ") + 1
    return statement[start:statement.index(") p JOIN assets a")]


def test_a_page_is_one_index_range_in_order(populated):
    with traced(populated.db) as statements:
        populated.query_assets(tags=["red"], asset_type="sprites", license="cc0", limit=5)
        populated.query_assets(tags=["red"], limit=5)
    pages_sql = [s for s in statements if s.startswith("SELECT a.* FROM (SELECT a.uid")]
    assert len(pages_sql) == 2
    want = ["asset_tags_type_license_created", "asset_tags_created"]
    if populated.db.engine == "sqlite":
        for sql, index in zip(pages_sql, want, strict=True):
            plan = [r[3] for r in populated.db.query("EXPLAIN QUERY PLAN " + inner_page(sql))]
            assert len(plan) == 1 and plan[0].startswith(f"SEARCH a USING COVERING INDEX {index} "), plan
        return
    # PostgreSQL at 60 rows would rather scan and sort: with both discouraged, the page must be an
    # index range needing no sort (at a million rows the planner picks it by cost: docs/BENCHMARKS.md)
    conn = populated.db.conn
    for sql, index in zip(pages_sql, want, strict=True):
        inner = inner_page(sql)
        params = ["tagorder", "sprites", "cc0", "red"] if index == want[0] else ["tagorder", "red"]
        with populated.db.transaction() as tx:
            tx.execute("SET LOCAL enable_seqscan = off")
            tx.execute("SET LOCAL enable_sort = off")
            tx.execute("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in tx.execute("EXPLAIN " + inner, (*params, 6, 0)))
        # which of the two ordered indexes is the planner's guess at 60 rows without statistics
        assert re.search(r"Index Only Scan Backward using asset_tags_(type_license_)?created on asset_tags", plan), plan
        assert "Sort" not in plan, plan
    assert conn is populated.db.conn
