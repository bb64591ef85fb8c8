"""Sidecars are encoded by orjson where it writes exactly what ``json.dumps(indent=2,
ensure_ascii=False)`` writes, and by ``json`` otherwise: the bytes never depend on which."""

from __future__ import annotations

import json
import math
import os
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyvn.registry.sidecars import _orjson_same, encode_sidecar
from comfyvn.studio.core.asset_registry import AssetRegistry


def reference(doc) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


text = st.text(st.characters(exclude_categories=("Cs",)))  # lone surrogates cannot be UTF-8 at all
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | text)
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(text | st.integers(), inner, max_size=4), max_leaves=30)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(text, documents, max_size=8))
def test_every_document_is_written_as_json_dumps_writes_it(doc):
    assert encode_sidecar(doc) == reference(doc)


def test_every_character_and_every_float_magnitude_is_written_alike():
    chars = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    doc = {"all": chars, chars[:300]: [chars[i:i + 7] for i in range(0, 4000, 7)]}
    assert _orjson_same(doc)  # orjson takes every character: it must escape them as json does
    assert orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE) == reference(doc)
    rng = random.Random(19)
    floats = [0.0, -0.0, 1.0, 0.1, 1e-4, 1e-5, 9.999e-5, 1e15, 9999999999999998.0, 1e16, 123456.789e10,
              math.pi, -math.e, 5e-324, 1.7976931348623157e308]
    floats += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30) for _ in range(20_000)]
    for value in floats:  # those it hands to orjson must come out alike
        assert encode_sidecar({"f": value}) == reference({"f": value}), value
    assert sum(_orjson_same(v) for v in floats) > 5_000  # the fast path is really taken (1e-4 <= |v| < 1e16)


def test_values_orjson_spells_otherwise_go_to_json():
    for value in (1e-05, 1e16, float("nan"), float("inf"), 2**64, {1: "int key"}, ("a", 1)):
        assert not _orjson_same({"v": value})
        assert encode_sidecar({"v": value}) == reference({"v": value})
    with pytest.raises(UnicodeEncodeError):  # as before: a lone surrogate is never written
        encode_sidecar({"v": "\udc80"})


def test_the_registry_writes_byte_identical_sidecars(ws):
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    src = ws.root / "in" / "é ✓.png"
    src.parent.mkdir()
    src.write_bytes(os.urandom(64))
    meta = {"prompt": "a \"quoted\"\n\tline – ünïcode 🎨 \x01", "cfg": 7.5, "tiny": 1e-7, "steps": 30,
            "seed": 2**63 + 5, "nested": {"list": [1, 2.0, None, True, "x"]}}
    rec = reg.register_file(src, "images", metadata=meta, tags=["b", "a"], license_tag="CC-BY-4.0")
    written = reg.ensure_sidecar(rec["uid"])  # the sidecar register_file wrote
    assert written.read_bytes() == reference(reg.sidecar_document(reg._row(rec["uid"])))
    reg.rewrite_sidecar(rec["uid"])
    assert written.read_bytes() == reference(reg.sidecar_document(reg._row(rec["uid"])))
