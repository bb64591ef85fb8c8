"""The tag rows' copies of their asset's type, licence and created_at (registry.007_tag_copies)
after the writes that rebuild or move whole stores: a registry rebuilt from its sidecars, and
``comfyvn-store migrate`` SQLite -> PostgreSQL -> SQLite.  After each, every tag row carries its
asset's values and a one-tag page (read from the copies) is the page of the form before."""

from __future__ import annotations

import io
import random
from pathlib import Path

from test_tag_order import FILTERS, TAGS, expected_rows, pages, register, tag_rows

from comfyvn.registry.rebuild import rebuild_from_disk
from comfyvn.registry.records import Records
from comfyvn.store import forget_database
from comfyvn.store.cli import main
from comfyvn.studio.core.asset_registry import AssetRegistry

SQLITE = "sqlite://"


def edited_registry(reg: AssetRegistry, src: Path) -> list[str]:
    rng = random.Random(44)
    uids = [register(reg, src, rng, i)["uid"] for i in range(30)]
    for step in range(40):  # relicence, retag and bulk edits: the copies move with every one
        uid = rng.choice(uids)
        if step % 3 == 0:
            reg.update_asset_meta(uid, license_tag=rng.choice(("cc0", "mit", None)), add_tags=[rng.choice(TAGS)])
        elif step % 3 == 1:
            reg.bulk_update_tags(rng.sample(uids, 5), add_tags=[rng.choice(TAGS)], remove_tags=[rng.choice(TAGS)],
                                 license_tag=rng.choice(("cc0", None, "mit")))
        else:
            reg.update_asset_meta(uid, {"license": rng.choice(("cc0", "", "proprietary")), "note": step})
    return uids


def same_pages(reg: AssetRegistry) -> None:
    assert tag_rows(reg) == expected_rows(reg) != set()
    new, old = Records.of(reg), Records.of(reg)
    old.tag_order = False
    for filters in FILTERS:
        for desc in (True, False):
            assert pages(new, limit=4, descending=desc, **filters) == pages(old, limit=4, descending=desc, **filters)


def snapshot(reg: AssetRegistry) -> tuple:
    rows = Records.of(reg).list_assets(sort="uid", descending=False)
    return sorted(tag_rows(reg)), [(r["uid"], r["type"], r["license"], sorted(r["tags"]), r["created_at"])
                                   for r in rows]


def test_a_registry_rebuilt_from_its_sidecars_has_the_copies_of_its_assets(ws, tmp_path):
    reg = AssetRegistry(project_id="tagorder", make_thumbnails=False)
    edited_registry(reg, tmp_path / "incoming")
    before = snapshot(reg)
    with reg.db.transaction() as conn:  # the rows lost; the files and sidecars kept
        conn.execute("DELETE FROM asset_tags WHERE project_id = ?", (reg.project_id,))
        conn.execute("DELETE FROM assets WHERE project_id = ?", (reg.project_id,))
    assert tag_rows(reg) == set()
    assert len(rebuild_from_disk(reg)["registered"]) == len(before[1])
    assert snapshot(reg) == before
    same_pages(reg)


def test_store_migrate_there_and_back_keeps_the_copies(ws, tmp_path, monkeypatch, pg_url):
    monkeypatch.delenv("COMFYVN_STORE_URL", raising=False)
    reg = AssetRegistry(ws=ws, project_id="tagorder", make_thumbnails=False)
    edited_registry(reg, tmp_path / "incoming")
    before = snapshot(reg)
    back = tmp_path / "back.sqlite3"
    for source, target in ((SQLITE + str(ws.db_path), pg_url), (pg_url, SQLITE + str(back))):
        out = io.StringIO()
        assert main(["migrate", "--from", source, "--to", target], out) == 0, out.getvalue()
    try:
        monkeypatch.setenv("COMFYVN_STORE_URL", pg_url)
        there = AssetRegistry(ws=ws, project_id="tagorder", make_thumbnails=False, recover=False)
        monkeypatch.delenv("COMFYVN_STORE_URL")
        assert there.db.engine == "postgresql" and snapshot(there) == before
        same_pages(there)
        there.update_asset_meta(before[1][0][0], license_tag="zlib")  # PostgreSQL's trigger after the move
        same_pages(there)
        home = AssetRegistry(ws=ws, project_id="tagorder", db_path=back, make_thumbnails=False, recover=False)
        assert home.db.engine == "sqlite" and snapshot(home) == before
        same_pages(home)
        home.bulk_update_tags([u for u, *_ in before[1][:6]], add_tags=["moved"], license_tag="mit")
        same_pages(home)
    finally:
        forget_database(pg_url)
