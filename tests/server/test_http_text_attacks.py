"""``GET /assets?text=`` as an attacker holding a valid token sends it: query syntax of both index
engines, wildcards, bytes that are no UTF-8, NUL, text past the cap.  Every answer is the plain
substring match or a JSON 400 naming the parameter; nothing reaches the database as syntax."""

from __future__ import annotations

import json
import unicodedata

import pytest
from server_helpers import assert_error

from comfyvn.registry.records import FILTER_ALL_TAGS_MAX, FILTER_TAGS_MAX, TEXT_MAX

TITLES = ['say "hi" AND bye', "a*b NEAR(c d, 1)", "col:value ^start -minus", "100% done_ok back\\slash",
          "Straße İstanbul 🎨", "ΣΊΣΥΦΟΣ ς"]


async def populate(api, make_png) -> dict[str, str]:
    made = {}
    for title in TITLES:
        r = await api("POST", "/assets/register", body={"path": str(make_png()), "asset_type": "images",
                                                         "metadata": {"title": title}})
        assert r.code == 201, r.body
        made[title] = r.json["uid"]
    return made


async def found(api, text: str) -> set[str]:
    r = await api("GET", "/assets", params={"text": text, "total": "true", "limit": "100"})
    assert r.code == 200, r.body
    assert r.json["total"] == len(r.json["items"])
    return {x["uid"] for x in r.json["items"]}


@pytest.mark.parametrize("text", ['"hi" AND', "a*b", "NEAR(c d", "col:value", "^start", "-minus", "100%", "done_ok",
                                  "k\\sl", "STRASSE", "straße", "İstanbul", "🎨", "σίσυφος", "ΣΊΣΥΦΟΣ ς", '"', "*",
                                  "search_text:", "%", '\\"hi\\"'])
async def test_text_is_a_literal_case_insensitive_substring(api, make_png, text):
    uids = await populate(api, make_png)
    # a substring of the metadata as JSON, as typed or as JSON writes it (`"` as `\"`), both sides through
    # str.lower() (docs/ASSET_REGISTRY.md, "Free text"); none of these texts is in a path, type or (absent) licence
    typed = {unicodedata.normalize(form, text.lower()) for form in ("NFC", "NFD")}  # composed or decomposed
    forms = typed | {json.dumps(t, ensure_ascii=False)[1:-1] for t in typed}
    expected = {uid for title, uid in uids.items()
                if any(form in json.dumps({"title": title}, ensure_ascii=False).lower() for form in forms)}
    assert await found(api, text) == expected


async def test_bad_text_is_a_json_400(api, make_png):
    await populate(api, make_png)
    assert_error(await api("GET", "/assets", params={"text": "a" * (TEXT_MAX + 1)}), 400, "invalid_parameter", "text")
    assert await found(api, "a" * TEXT_MAX) == set()
    # Tornado turns control characters of query arguments (NUL included) into spaces: "hi bye" is searched
    assert await found(api, "hi\0bye") == await found(api, "hi\x1fbye") == await found(api, "hi bye") == set()
    assert await found(api, "\0bye") == await found(api, " bye") != set()
    r = await api("GET", "/assets", params={"text": b"ab\xed\xa0\x80cd"})  # a lone surrogate's UTF-8-like bytes
    assert r.code == 400, (r.code, r.body)
    r = await api("GET", "/assets", params={"text": b"\xff\xfe"})
    assert r.code == 400, (r.code, r.body)


@pytest.mark.parametrize("mode, cap", [("all", FILTER_ALL_TAGS_MAX), ("any", FILTER_TAGS_MAX)])
async def test_a_filter_of_too_many_tags_is_a_json_400(api, make_png, mode, cap):
    # before: all-mode past ~800 tags was SQLite's "Expression tree is too large", an HTTP 500; on
    # PostgreSQL 200 tags took longer to plan than the client waits
    await populate(api, make_png)
    for n in (cap + 1, 1000):
        assert_error(await api("GET", "/assets", params={"tags": ",".join(f"t{i}" for i in range(n)),
                                                         "tags_mode": mode}), 400, "invalid_request",
                     f"at most {cap} tags")
    r = await api("GET", "/assets", params={"tags": ",".join(f"t{i}" for i in range(cap)), "tags_mode": mode,
                                            "total": "true"})
    assert r.code == 200 and r.json["total"] == 0, r.body
