"""Filters an attacker or a careless paste can send through the Python API: free text too long for
SQLite's LIKE or not encodable at all, more tags than one SQLite query holds.  Each is refused with
a ValueError that says why, whether or not any asset happens to match."""

from __future__ import annotations

import pytest

from comfyvn.registry.records import FILTER_ALL_TAGS_MAX, FILTER_TAGS_MAX, TEXT_MAX
from comfyvn.studio.core.asset_registry import AssetRegistry


@pytest.fixture
def reg(ws) -> AssetRegistry:
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    src = ws.root / "long.bin"
    src.write_text("x")
    # metadata long enough that a long text matches in the trigram index: the LIKE re-check then runs
    reg.register_file(src, "sprites", tags=["hero"], metadata={"title": "a" * 60_000})
    return reg


@pytest.mark.parametrize("text", ["a" * 50_001, "%" * 25_001, "🎨" * 12_501])
def test_text_past_the_cap_is_refused_whatever_matches(reg: AssetRegistry, text: str) -> None:
    # before: sqlite3.OperationalError "LIKE or GLOB pattern too complex" when a row matched the index
    # (or the hash/tag filter narrowed first), an empty page when none did
    for kwargs in ({}, {"hash_value": reg.list_assets()[0]["hash"]}, {"tags": ["nobody"]}):
        with pytest.raises(ValueError, match=f"at most {TEXT_MAX} characters"):
            reg.list_assets(text=text, limit=10, **kwargs)
    with pytest.raises(ValueError, match=f"at most {TEXT_MAX} characters"):
        reg.query_assets(text=text, with_total=True)


def test_text_at_the_cap_still_searches(reg: AssetRegistry) -> None:
    assert [r["type"] for r in reg.list_assets(text="A" * TEXT_MAX, limit=10)] == ["sprites"]
    assert reg.list_assets(text="b" * TEXT_MAX, limit=10) == []


@pytest.mark.parametrize("text", ["ab\ud800cd", "\udfff\udfff\udfff", "x\udc80"])
def test_lone_surrogate_is_refused_with_its_reason(reg: AssetRegistry, text: str) -> None:
    # before: UnicodeEncodeError from the driver ("'utf-8' codec can't encode ... surrogates not allowed")
    with pytest.raises(ValueError, match="valid Unicode"):
        reg.list_assets(text=text, limit=10)


@pytest.mark.parametrize("mode, cap", [("all", FILTER_ALL_TAGS_MAX), ("any", FILTER_TAGS_MAX)])
def test_too_many_tags_in_one_filter_are_refused(reg: AssetRegistry, mode: str, cap: int) -> None:
    # before: all-mode past ~800 tags raised sqlite3.OperationalError "Expression tree is too large"; on
    # PostgreSQL 100 took 2.9 s to plan, 200 more than the HTTP client's 20 s
    for n in (cap + 1, 1000):
        with pytest.raises(ValueError, match=f"at most {cap} tags.*got {n}"):
            reg.list_assets(tags=[f"t{i}" for i in range(n)], tags_mode=mode, limit=10)
    assert len(reg.list_assets(tags=["hero", *(f"t{i}" for i in range(cap - 1))], tags_mode=mode,
                               limit=10)) == (1 if mode == "any" else 0)


def test_a_long_text_asks_the_index_for_a_few_of_its_trigrams_not_a_phrase():
    """A phrase is matched position by position: 256 × "a" against one asset of 1,000,000 × "a"
    cost 2.3 s of CPU in SQLite alone; a few ANDed trigrams intersect row lists (1 ms) and the
    text's LIKE keeps the answer exact (tests/test_fulltext.py compares it with the scan)."""
    from comfyvn.registry.records import TEXT_MATCH_TRIGRAMS, trigram_query

    assert trigram_query("a" * 256) == '"aaa"'
    assert trigram_query('say "hi"') == '"say" AND "ay " AND "y """ AND " ""h" AND """hi" AND "hi"""'
    terms = trigram_query("dragon_knight_v2 by someone, 2024 edition").split(" AND ")
    assert len(terms) == TEXT_MATCH_TRIGRAMS and terms[0] == '"dra"' and terms[-1] == '"ion"'
