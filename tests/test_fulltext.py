"""Free-text search (``text=``) through an index on both engines: SQLite's FTS5 trigram table,
PostgreSQL's pg_trgm GIN index.  The answer is always the one the plain ``LIKE '%…%'`` scan over
``search_text`` gives (a case-insensitive substring; ``%``, ``_``, ``\\``, quotes and FTS operators
literal), and the index follows every write: insert, edit, retag, move, removal, rebuild, a
migration of an existing workspace and a transfer between stores."""

from __future__ import annotations

import io
import json
import random
import sqlite3
import unicodedata
from pathlib import Path

import pytest

import comfyvn.registry.records as recordsmod
import comfyvn.store.migrations as migrationsmod
from comfyvn.registry.rebuild import rebuild_from_disk
from comfyvn.registry.records import Records
from comfyvn.store import forget_database
from comfyvn.store.cli import main
from comfyvn.store.db import Database
from comfyvn.store.transfer import transfer
from comfyvn.studio.core.asset_registry import AssetRegistry

SQLITE = "sqlite://"
# titles full of what a naive index query would read as syntax: FTS5 operators and quotes, LIKE
# wildcards and escapes, and text whose lower case is longer or not ASCII
TITLES = ['Hero "quoted" AND fight', "a*b OR c NOT d", "100% done_ok", "back\\slash C:\\path",
          "Straße Groß", "İstanbul ıi", "日本語のテキスト", "🎨 palette 🎨", "NEAR(x y, 2)",
          "col:value ^start", "-minus +plus", "it's 'single' \"double\"", "ΣΊΣΥΦΟΣ ς σ", "tab\there",
          "under_score__double", "percent%%twice", "Ǆemal ǅ ǆ", "ﬁne ligature", "x", "ab"]
TAGS = [["hero", "red"], ["villain"], ["hero"], ["ambient", "red"], []]
TYPES = ["sprites", "audio", "docs"]
ALPHABET = ["a", "b", "e", "o", "s", "ß", "İ", "ı", "日", "本", "🎨", '"', "'", "*", "%", "_", "\\", "-", " ",
            ":", "(", ")", "^", "+", "AND", "OR", "NOT", "NEAR", "Σ", "ς", "ǅ", "ﬁ", "{", "}", ",", "0", "1"]


@pytest.fixture
def reg(ws) -> AssetRegistry:
    return AssetRegistry(ws=ws, make_thumbnails=False)


def populate(reg: AssetRegistry, folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    recs = []
    for i, title in enumerate(TITLES):
        src = folder / f"{'héllo wörld ' if i % 4 == 0 else ''}file_{i}.bin"
        src.write_text(f"bytes of {i} {title}")
        recs.append(reg.register_file(src, TYPES[i % 3], tags=TAGS[i % 5],
                                      license_tag=["cc0", None, "cc-by-4.0"][i % 3],
                                      metadata={"title": title, "n": i}, created_at=1000.0 + i))
    return recs


def indexed_texts(reg: AssetRegistry) -> dict[str, str]:
    return {r[0]: r[1] for r in reg.db.query("SELECT uid, search_text FROM assets WHERE project_id = ?",
                                             (reg.project_id,))}


def newest_first(reg: AssetRegistry, uids: set[str]) -> list[str]:
    rows = reg.db.query("SELECT uid, created_at FROM assets WHERE project_id = ?", (reg.project_id,))
    return [uid for _c, uid in sorted(((c, u) for u, c in rows if u in uids), reverse=True)]


def text_forms(text: str) -> set[str]:
    """What a text matches in search_text: itself lower-cased, composed (NFC) or decomposed (NFD),
    each as typed or as JSON writes it inside the metadata (``"`` as ``\\"``, a backslash doubled,
    a tab as ``\\t``)."""
    typed = {unicodedata.normalize(form, text.lower()) for form in ("NFC", "NFD")}
    return typed | {json.dumps(t, ensure_ascii=False)[1:-1] for t in typed}


def like_scan(reg: AssetRegistry, text: str) -> set[str]:
    """The plain scan the index replaces: ``LIKE '%…%'`` over every row's search_text (once per form
    of the text), with the wildcards escaped.  On PostgreSQL with sequential scans only, so its own
    index cannot answer."""
    sql = "SELECT uid FROM assets WHERE project_id = ? AND search_text LIKE ? ESCAPE '\\'"
    found: set[str] = set()
    with reg.db.transaction() as conn:
        if reg.db.engine == "postgresql":
            conn.execute("SET LOCAL enable_indexscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
        for form in text_forms(text):
            needle = "%" + form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            found |= {r[0] for r in conn.execute(sql, (reg.project_id, needle))}
    return found


def check_index(reg: AssetRegistry) -> None:
    """The index holds exactly the rows' text: FTS5's integrity check against the assets table
    (raises on any difference), or PostgreSQL's index in place and valid."""
    if reg.db.engine == "sqlite":
        with reg.db.transaction() as conn:
            conn.execute("INSERT INTO assets_fts(assets_fts, rank) VALUES ('integrity-check', 1)")
    else:
        row = reg.db.query_one("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                               " WHERE c.relname = 'assets_search_trgm' AND pg_table_is_visible(c.oid)")
        assert row is not None and row[0] is True


def check_search(reg: AssetRegistry, texts: list[str], **filters) -> int:
    """Every text through every query form, against a substring test of each row's search_text;
    returns how many of them matched something."""
    records = Records.of(reg)
    rows = indexed_texts(reg)
    found = 0
    for text in texts:
        want = {uid for uid, st in rows.items() if any(form in st for form in text_forms(text))}
        if "asset_type" in filters or "tags" in filters:
            want &= {r["uid"] for r in reg.list_assets(**filters)}
        else:
            assert like_scan(reg, text) == want, text
        ordered = newest_first(reg, want)
        assert [r["uid"] for r in reg.list_assets(text=text, **filters)] == ordered, text
        page = records.query_assets(text=text, limit=3, with_total=True, **filters)
        assert [r["uid"] for r in page["items"]] == ordered[:3] and page["total"] == len(want), text
        capped = records.query_assets(text=text, limit=2, with_total=True, total_cap=2, **filters)
        assert (capped["total"], capped["total_capped"]) == (min(len(want), 2), len(want) > 2), text
        assert records.matching_uids(text=text, **filters) == ordered, text
        assert records.matching_uids(text=text, sort="path", descending=False, **filters) == \
            [uid for _p, uid in sorted((reg.get_asset(u)["path"], u) for u in want)], text
        found += bool(want)
    return found


def random_texts(reg: AssetRegistry, rng: random.Random, n: int) -> list[str]:
    """Substrings of the rows' own text (1-14 characters, in any case) and random strings."""
    rows = list(indexed_texts(reg).values())
    texts = []
    for _ in range(n):
        if rng.random() < 0.6:
            st = rng.choice(rows)
            start = rng.randrange(len(st))
            text = st[start:start + rng.randint(1, 14)]
            texts.append(text.upper() if rng.random() < 0.3 else text)
        else:
            texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 5))))
    return texts


# ------------------------------------------------------------------------------ the answers
def test_free_text_answers_what_the_like_scan_answers(reg, tmp_path, monkeypatch):
    populate(reg, tmp_path / "in")
    check_index(reg)
    rng = random.Random(19)
    fixed = ['"', '""', '"quoted"', "*", "a*b", "and", "AND fight", "or c", "not", "near(", "col:", "^st", "-mi",
             "%", "%%", "100%", "_", "__", "e_o", "\\", "\\s", "c:\\", "'", "it's", "ß", "straße", "STRASSE",
             "i̇st", "İSTANBUL", "日本", "日本語", "🎨", "🎨 p", "σ", "ς σ", "ΣΊΣ", "ǆ", "ǅ", "ﬁ", "fine", "\t",
             "tab\th", "   ", "x", "ab", "title", '{"n": 1', "héllo wörld", "HÉLLO", "no such text anywhere"]
    assert check_search(reg, fixed) >= 35
    # with the thresholds tiny, both plans run for every text: driven by the index, and the walk
    monkeypatch.setattr(recordsmod, "PAGE_DRIVE_MAX", 2)
    monkeypatch.setattr(recordsmod, "PROBE_CAP", 3)
    texts = random_texts(reg, rng, 120)
    assert check_search(reg, texts) >= 60
    assert check_search(reg, texts[:60], asset_type="sprites") >= 10
    assert check_search(reg, texts[60:], tags=["hero"]) >= 10
    assert check_search(reg, fixed, asset_type="audio", tags=["red"]) >= 3


def test_text_is_found_as_typed_where_the_metadata_json_escapes_it(reg, tmp_path):
    """A quote, a backslash or a tab reads escaped in the metadata's JSON (``say \\"hi\\"``):
    the text typed plainly finds it, through the index (3+ characters) and the scan."""
    populate(reg, tmp_path / "in")
    meta = {"title": 'say "hi"', "source": "C:\\ComfyUI\\models\\hero.safetensors", "note": "line\tone"}
    src = tmp_path / "in" / "quoted.bin"
    src.write_bytes(b"quoted metadata")
    uid = reg.register_file(src, "docs", metadata=meta)["uid"]
    for text in ['say "hi"', '"hi"', "c:\\comfyui\\models\\hero", "\\models\\", "line\tone", '"', "\\"]:
        assert uid in {r["uid"] for r in reg.list_assets(text=text)}, text
        assert uid in Records.of(reg).matching_uids(text=text), text
    assert reg.list_assets(text='say "bye"') == []


def test_text_typed_composed_finds_a_name_written_decomposed_and_back(reg, tmp_path):
    """macOS writes file names decomposed (NFD); a keyboard types them composed (NFC)."""
    populate(reg, tmp_path / "in")
    nfd, nfc = unicodedata.normalize("NFD", "café_crème"), unicodedata.normalize("NFC", "Mañana")
    uids = {}
    for name, title in ((nfd, "from a mac"), ("plain", nfc)):
        src = tmp_path / "in" / f"{name}.bin"
        src.write_bytes(title.encode())
        uids[name] = reg.register_file(src, "docs", metadata={"title": title})["uid"]
    for text in ("café_crème", unicodedata.normalize("NFD", "CAFÉ"), "crè"):
        assert uids[nfd] in {r["uid"] for r in reg.list_assets(text=text)}, text
    for text in (unicodedata.normalize("NFD", "mañana"), "MAÑANA", "aña"):
        assert uids["plain"] in {r["uid"] for r in reg.list_assets(text=text)}, text


def test_text_with_a_nul_character_is_refused(reg, tmp_path):
    populate(reg, tmp_path / "in")
    for text in ("\0", "ab\0cd", "hero\0"):
        with pytest.raises(ValueError, match="NUL"):
            reg.list_assets(text=text)


def test_sqlite_reads_free_text_from_the_index_and_short_text_by_scan(tmp_path, monkeypatch):
    db = Database(tmp_path / "plans.sqlite3")
    db.migrate()
    reg_db = Records(db, "p", None)  # type: ignore[arg-type]  # queries only: no files involved
    with db.transaction() as conn:
        for i in range(300):
            conn.execute("INSERT INTO assets(project_id, uid, type, path, hash, bytes, created_at, updated_at,"
                         " search_text) VALUES ('p', ?, 'docs', ?, ?, 1, ?, ?, ?)",
                         (f"u{i:04d}", f"docs/f{i}.txt", f"h{i}", float(i), float(i),
                          f"docs/f{i}.txt docs title {'rare' if i == 7 else 'common'} {i}"))

    def plan(**filters) -> str:
        from_sql, where, params = reg_db.filter_sql(**filters).plan(page=True)
        sql = f"SELECT a.uid FROM {from_sql} WHERE {' AND '.join(where)} ORDER BY a.created_at DESC LIMIT 51"
        return " | ".join(r[3] for r in db.query("EXPLAIN QUERY PLAN " + sql, tuple(params)))

    assert plan(text="RARE").startswith("SCAN f VIRTUAL TABLE")  # driven by its index rows
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan(text="RARE")
    assert "VIRTUAL TABLE" not in plan(text="co")  # too short for a trigram: the walk
    assert "VIRTUAL TABLE" in plan(text="common")  # 299 matches: fewer than PAGE_DRIVE_MAX
    monkeypatch.setattr(recordsmod, "PAGE_DRIVE_MAX", 100)
    assert "VIRTUAL TABLE" not in plan(text="common")  # common: a page is found at the walk's start
    assert plan(text="RARE").startswith("SCAN f VIRTUAL TABLE")
    # with a tag: the narrower of the two drives, the other is checked per row
    with db.transaction() as conn:
        conn.executemany("INSERT INTO asset_tags(project_id, uid, tag) VALUES ('p', ?, ?)",
                         [(f"u{i:04d}", "few" if i % 50 == 7 else "many") for i in range(300)])
    assert plan(text="rare", tags=["many"]).startswith("SCAN f VIRTUAL TABLE")
    few = plan(text="common", tags=["few"])  # the tag drives (its rows by an index of asset_tags)
    assert few.startswith("SEARCH d USING") and "(project_id=? AND tag=?)" in few.split(" | ")[0]
    assert reg_db.matching_uids(text="rare", tags=["many"]) == [] and reg_db.matching_uids(text="rare", tags=["few"]) \
        == ["u0007"]
    assert reg_db.matching_uids(text="common", tags=["few"]) == [f"u{i:04d}" for i in (257, 207, 157, 107, 57)]
    assert reg_db.matching_uids(text="rare") == ["u0007"] and reg_db.filter_sql(text="rare").count() == (1, False)
    assert reg_db.filter_sql(text="common").count(cap=100) == (100, True)


def test_the_index_serves_text_of_three_characters_or_more_only(reg, tmp_path):
    """Both engines: a page of a 3+ character text reads the trigram index; a 1-2 character text
    never does (PostgreSQL would read its whole GIN index for a pattern without a trigram)."""
    populate(reg, tmp_path / "in")
    records = Records.of(reg)

    def plan(text: str) -> str:
        from_sql, where, params = records.filter_sql(text=text).plan(page=True)
        with reg.db.transaction() as conn:
            if reg.db.engine == "sqlite":
                sql = (f"SELECT a.uid FROM {from_sql} WHERE {' AND '.join(where)}"
                       " ORDER BY a.created_at DESC, a.uid DESC LIMIT 49")
                return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, tuple(params)))
            # PostgreSQL picks between the GIN index and the project's range from its statistics: what
            # matters is whether the text's term can be read from the index at all
            conn.execute("SET LOCAL enable_seqscan = off")
            term = next(i for i, w in enumerate(where) if "LIKE" in w)
            start = sum(w.count("?") for w in where[:term])  # a text with a quote is two LIKEs (as typed, as JSON)
            return " | ".join(r[0] for r in conn.execute("EXPLAIN SELECT a.uid FROM assets a WHERE " + where[term],
                                                         tuple(params[start:start + where[term].count("?")])))

    index = "VIRTUAL TABLE" if reg.db.engine == "sqlite" else "assets_search_trgm"
    for text in ("fight", "ΣΊΣ", "100%", '"qu'):
        assert index in plan(text), (text, plan(text))
    for text in ("x", "ab", "%", "日本"):
        assert index not in plan(text), (text, plan(text))
        assert [r["uid"] for r in reg.list_assets(text=text)] == newest_first(reg, like_scan(reg, text))


# ------------------------------------------------------------------------------ kept in step
def test_the_index_follows_every_write(reg, tmp_path, ws):
    recs = populate(reg, tmp_path / "in")
    probe = ["fight", "renamed", "zebra", "moved-here", "again", "hero", "straße", "brand-new"]
    check_index(reg)
    check_search(reg, probe)
    reg.update_asset_meta(recs[0]["uid"], {"title": "renamed zebra"})  # edit
    reg.update_asset_meta(recs[1]["uid"], {"title": "untouched"}, add_tags=["brand-new"])  # edit + retag
    reg.bulk_update_tags([recs[2]["uid"], recs[3]["uid"]], add_tags=["zebra"], remove_tags=["hero"])  # retag
    reg.update_asset_meta(recs[4]["uid"], {"n": 4})  # same text: nothing to re-index
    check_index(reg)
    assert check_search(reg, probe + ['"quoted"']) >= 4
    assert reg.list_assets(text="hero \"quoted\" and fight") == []  # the old title is gone from the index
    moved = reg.assets_root / "moved-here" / "x.bin"  # a file moved by hand, then relocated
    moved.parent.mkdir()
    Path(reg.get_asset(recs[5]["uid"])["abs_path"]).rename(moved)
    reg.relocate_asset(recs[5]["uid"], "moved-here/x.bin")
    assert [r["uid"] for r in reg.list_assets(text="moved-here")] == [recs[5]["uid"]]
    for rec in recs[6:9]:  # removal
        reg.remove_asset(rec["uid"])
    check_index(reg)
    assert reg.list_assets(text="日本語") == []  # recs[6] held it
    check_search(reg, probe + ["日本語", "ΣΊΣ"])
    (reg.assets_root / "docs").mkdir(exist_ok=True)
    (reg.assets_root / "docs" / "again and again.txt").write_text("a file with no row")  # rebuild registers it
    assert [r["path"] for r in rebuild_from_disk(reg)["registered"]] == ["docs/again and again.txt"]
    check_index(reg)
    assert [r["path"] for r in reg.list_assets(text="AGAIN AND")] == ["docs/again and again.txt"]
    check_search(reg, probe)


def test_the_sqlite_check_finds_a_row_changed_behind_the_index(tmp_path):
    """The integrity check the tests rely on is not vacuous: a row changed with the triggers
    dropped is caught, and the index's rebuild repairs it; VACUUM keeps it valid (the rowids
    it refers to stay: assets has indexes, so SQLite copies its rows with their rowids)."""
    db = Database(tmp_path / "own.sqlite3")
    db.migrate()
    with db.transaction() as conn:
        for i in range(50):
            conn.execute("INSERT INTO assets(project_id, uid, type, path, hash, bytes, created_at, updated_at,"
                         " search_text) VALUES ('p', ?, 'docs', ?, ?, 1, 0, 0, ?)",
                         (f"u{i:03d}", f"d/{i}", f"h{i}", f"d/{i} docs text number {i}"))
    check = "INSERT INTO assets_fts(assets_fts, rank) VALUES ('integrity-check', 1)"
    with db.transaction() as conn:
        conn.execute("DELETE FROM assets WHERE uid IN ('u001', 'u002')")
        conn.execute("UPDATE assets SET search_text = 'changed' WHERE uid = 'u003'")
        conn.execute(check)  # the triggers kept it in step
    raw = sqlite3.connect(tmp_path / "own.sqlite3", isolation_level=None)
    raw.execute("VACUUM")
    raw.execute(check)
    assert raw.execute("SELECT COUNT(*) FROM assets_fts WHERE assets_fts MATCH '\"number 4\"'").fetchone()[0] == 11
    raw.execute("DROP TRIGGER assets_fts_update")
    raw.execute("UPDATE assets SET search_text = 'behind its back' WHERE uid = 'u010'")
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        raw.execute(check)
    raw.execute("INSERT INTO assets_fts(assets_fts) VALUES ('rebuild')")
    raw.execute(check)
    raw.close()


# ------------------------------------------------------------------------------ migration, transfer
def test_migrating_an_existing_workspace_fills_the_index(ws, monkeypatch, tmp_path):
    """A store made before the index (its migration held back) with assets in it: opening it
    with the index's migration indexes every existing row."""
    mine = next(m for m in migrationsmod.MIGRATIONS if m[0] == "registry.006_fulltext")
    earlier = [m for m in migrationsmod.MIGRATIONS if m is not mine]
    monkeypatch.setattr(migrationsmod, "MIGRATIONS", earlier)
    monkeypatch.setattr("comfyvn.store.base.MIGRATIONS", earlier)
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    populate(reg, tmp_path / "in")
    assert "registry.006_fulltext" not in reg.db.applied_migrations()
    if reg.db.engine == "sqlite":
        assert reg.db.query_one("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'assets_fts%'")[0] == 0
    monkeypatch.setattr(migrationsmod, "MIGRATIONS", [*earlier, mine])
    monkeypatch.setattr("comfyvn.store.base.MIGRATIONS", [*earlier, mine])
    assert reg.db.migrate() == ["registry.006_fulltext"]
    check_index(reg)
    if reg.db.engine == "sqlite":
        assert reg.db.query_one("SELECT COUNT(*) FROM assets_fts WHERE assets_fts MATCH '\"bin\"'")[0] == len(TITLES)
    assert check_search(reg, ["fight", "straße", "日本語", "file_1", "hero", "100%"]) == 6


def transfer_checked(source: str, target: str) -> None:
    out = io.StringIO()
    assert main(["migrate", "--from", source, "--to", target], out) == 0, out.getvalue()
    assert "verified: both sides hold the same rows" in out.getvalue()
    assert "assets_fts" not in out.getvalue()  # an index is no table of the workspace's: never copied


def test_store_migrate_both_ways_keeps_the_index(ws, tmp_path, monkeypatch, pg_url):
    """``comfyvn-store migrate`` SQLite -> SQLite, SQLite -> PostgreSQL and back: each target's
    index answers every search as the source's rows do."""
    monkeypatch.delenv("COMFYVN_STORE_URL", raising=False)
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    recs = populate(reg, tmp_path / "in")
    reg.update_asset_meta(recs[0]["uid"], {"title": "edited before the move"})
    reg.remove_asset(recs[1]["uid"])
    texts = random_texts(reg, random.Random(7), 40) + ["edited before", "a*b or", "日本語", "100%"]
    want = {t: [r["uid"] for r in reg.list_assets(text=t)] for t in texts}
    copy = tmp_path / "copy.sqlite3"
    back = tmp_path / "back.sqlite3"
    transfer_checked(SQLITE + str(ws.db_path), SQLITE + str(copy))
    transfer_checked(SQLITE + str(ws.db_path), pg_url)
    transfer_checked(pg_url, SQLITE + str(back))
    try:
        for url in (SQLITE + str(copy), pg_url, SQLITE + str(back)):
            if url == pg_url:
                monkeypatch.setenv("COMFYVN_STORE_URL", pg_url)
                there = AssetRegistry(ws=ws, make_thumbnails=False, recover=False)
                monkeypatch.delenv("COMFYVN_STORE_URL")
            else:
                there = AssetRegistry(ws=ws, db_path=url[len(SQLITE):], make_thumbnails=False, recover=False)
            assert there.db.engine == ("postgresql" if url == pg_url else "sqlite")
            check_index(there)
            assert {t: [r["uid"] for r in there.list_assets(text=t)] for t in texts} == want, url
        # a second run copies nothing and leaves the index whole; --replace re-indexes through the triggers
        transfer_checked(SQLITE + str(ws.db_path), SQLITE + str(copy))
        with sqlite3.connect(copy) as conn:
            conn.execute("UPDATE assets SET search_text = 'a changed copy' WHERE uid = ?", (recs[2]["uid"],))
        report = transfer(SQLITE + str(ws.db_path), SQLITE + str(copy), replace=True)
        assert report.identical and report.replaced
        there = AssetRegistry(ws=ws, db_path=copy, make_thumbnails=False, recover=False)
        check_index(there)
        assert there.list_assets(text="a changed copy") == []
        assert {t: [r["uid"] for r in there.list_assets(text=t)] for t in texts} == want
    finally:
        forget_database(pg_url)
