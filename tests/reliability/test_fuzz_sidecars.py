"""Fuzz sidecar parsing and the enforcer with corrupted sidecars.

For any bytes in a sidecar:

* ``AssetRegistry.read_sidecar`` returns a dict or raises ``AssetRegistryError`` naming the file;
* ``audit_sidecars`` (dry run) never raises, changes nothing, and flags exactly that asset
  (``invalid_sidecar`` / ``sidecar_mismatch``) unless the bytes happen to be the right document;
* ``audit_sidecars(fix=True, overwrite=True)`` rewrites it from the database, after which a dry
  run finds no integrity problem;
* ``rebuild_from_disk`` with a corrupted sidecar beside an *unregistered* file never raises and
  registers the file under the uid of its bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfyvn.registry.rebuild import audit_sidecars, rebuild_from_disk
from comfyvn.studio.core.asset_registry import AssetRegistry, AssetRegistryError

from .fuzzkit import count, fuzz_settings

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)


@st.composite
def corrupted(draw, document: dict) -> bytes:
    """Bytes derived from a valid sidecar document: broken, mutated, replaced or absurd."""
    good = json.dumps(document, indent=2).encode()
    kind = draw(st.sampled_from(["bytes", "truncate", "flip", "field", "drop", "extra", "non_object", "deep",
                                 "bom", "utf16"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "truncate":
        return good[: draw(st.integers(0, len(good) - 1))]
    if kind == "flip":
        i = draw(st.integers(0, len(good) - 1))
        return good[:i] + bytes([good[i] ^ draw(st.integers(1, 255))]) + good[i + 1:]
    doc = json.loads(good)
    if kind == "field":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(json_values)
    elif kind == "drop":
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif kind == "extra":
        doc[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in doc))] = draw(json_values)
    elif kind == "non_object":
        return json.dumps(draw(json_values.filter(lambda v: not isinstance(v, dict)))).encode()
    elif kind == "deep":
        n = draw(st.integers(1_000, 1_500))
        return b'{"uid":' + b"[" * n + b"]" * n + b"}"
    elif kind == "bom":
        return b"\xef\xbb\xbf" + good
    else:
        return json.dumps(doc).encode("utf-16")
    return json.dumps(doc).encode()


@pytest.fixture
def registry(ws):
    reg = AssetRegistry(ws=ws, make_thumbnails=False)
    for i in range(3):
        src = ws.root / f"file-{i}.bin"
        src.write_bytes(f"sidecar fuzz {i}\n".encode() * (i + 1))
        reg.register_file(src, "misc", tags=["fuzz"], license_tag="cc0")
    return reg


def _integrity(report: dict) -> list[dict]:
    return [f for f in report["findings"] if f["kind"] not in ("missing_tags", "missing_license")]


@fuzz_settings(60)
@given(data=st.data())
def test_read_sidecar_and_dry_run_audit_on_corrupted_sidecars(registry, data):
    count("sidecars.read_and_audit")
    assets = list(registry.iter_assets())
    victim = data.draw(st.sampled_from(assets))
    path = registry.sidecar_path_for(victim["path"])
    expected = registry.sidecar_document(registry._row(victim["uid"]))
    raw = data.draw(corrupted(expected))
    path.write_bytes(raw)
    try:
        try:
            parsed = registry.read_sidecar(victim["uid"])
        except AssetRegistryError as exc:
            assert str(path) in str(exc)
        else:
            assert isinstance(parsed, dict)
        report = audit_sidecars(registry, fix=False)
        assert path.read_bytes() == raw, "a dry run changed the sidecar"
        flagged = {(f["kind"], f["uid"]) for f in _integrity(report)}
        if json.loads(json.dumps(expected)) == _loads_or_none(raw):
            assert flagged == set(), flagged
        else:
            assert flagged & {("invalid_sidecar", victim["uid"]), ("sidecar_mismatch", victim["uid"])}, report
            assert {uid for _, uid in flagged} == {victim["uid"]}, flagged
    finally:
        registry.rewrite_sidecar(victim["uid"])


@fuzz_settings(40)
@given(data=st.data())
def test_enforcer_overwrite_repairs_any_corrupted_sidecar(registry, data):
    count("sidecars.overwrite_repair")
    assets = list(registry.iter_assets())
    for victim in data.draw(st.lists(st.sampled_from(assets), min_size=1, max_size=3, unique_by=lambda a: a["uid"])):
        expected = registry.sidecar_document(registry._row(victim["uid"]))
        registry.sidecar_path_for(victim["path"]).write_bytes(data.draw(corrupted(expected)))
    audit_sidecars(registry, fix=True, overwrite=True)
    after = audit_sidecars(registry, fix=False)
    assert _integrity(after) == [], after["findings"]
    for rec in assets:
        assert registry.read_sidecar(rec["uid"]) == json.loads(json.dumps(
            registry.sidecar_document(registry._row(rec["uid"]))))


_LOOSE = itertools.count()


@fuzz_settings(40)
@given(data=st.data())
def test_rebuild_from_disk_with_corrupted_sidecar_beside_an_unregistered_file(registry, data):
    count("sidecars.rebuild")
    n = next(_LOOSE)  # a fresh file per example: nothing carries over from a failed one
    target = registry.assets_root / "loose" / f"loose-{n:06d}.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(f"loose file {n}\n".encode())
    template = {"uid": "0" * 16, "type": "misc", "path": f"loose/loose-{n:06d}.bin", "hash": "0" * 64, "bytes": 1,
                "tags": ["x"], "license": None, "origin": "local", "version": 1,
                "created_at": "2025-01-01T00:00:00.000Z", "meta": {}, "preview": {"kind": None}, "provenance": {}}
    sidecar = target.with_name(target.name + ".asset.json")
    sidecar.write_bytes(data.draw(corrupted(template)))
    uid = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
    try:
        rebuild_from_disk(registry)
        rec = registry.get_asset(uid)
        assert rec is not None and rec["path"] == f"loose/loose-{n:06d}.bin", "the unregistered file was not registered"
        doc = registry.read_sidecar(uid)
        assert doc["uid"] == uid and doc["hash"] == rec["hash"], doc  # rewritten from the new row
    finally:
        if registry.get_asset(uid) is not None:
            registry.remove_asset(uid, delete_files=True)
        target.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)


def _loads_or_none(raw: bytes):
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"uid":' + b"[" * 5000 + b"]" * 5000 + b"}"],
                         ids=["top-level", "inside-object"])
def test_deeply_nested_sidecar_is_a_clear_error(registry, raw):
    """Found by the fuzzer: json.loads raises RecursionError, which read_sidecar did not turn into
    AssetRegistryError (GET /assets/{uid}/sidecar answered 500) and the enforcer did not report."""
    victim = next(registry.iter_assets())
    path = registry.sidecar_path_for(victim["path"])
    path.write_bytes(raw)
    with pytest.raises(AssetRegistryError, match="not valid JSON"):
        registry.read_sidecar(victim["uid"])
    report = audit_sidecars(registry, fix=False)
    assert ("invalid_sidecar", victim["uid"]) in {(f["kind"], f["uid"]) for f in report["findings"]}
