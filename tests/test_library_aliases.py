"""Every hash form a tool shows resolves to the asset (find_by_hash, one indexed alias table)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from comfyvn.config import update_config
from comfyvn.hashforms import hash_path
from comfyvn.library.scan import scan_library
from comfyvn.studio.core.asset_registry import AssetRegistry

OLD_NS = 1_600_000_000 * 10**9


@pytest.fixture
def scanned(ws, tmp_path):
    root = tmp_path / "loras"
    root.mkdir()
    header = json.dumps({"__metadata__": {"ss_output_name": "ink"}}).encode()
    body = len(header).to_bytes(8, "little") + header + os.urandom(1_300_000)  # > 1 MiB + 64 KiB: a real AutoV1
    path = root / "ink.safetensors"
    path.write_bytes(body)
    os.utime(path, ns=(OLD_NS, OLD_NS))
    update_config({"library": {"roots": [{"name": "loras", "path": str(root), "layout": "plain"}]}}, ws)
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    scan_library(ws=ws, registry=reg)
    return reg, hash_path(path), path


def test_every_form_full_and_displayed_any_case_resolves(scanned):
    reg, forms, path = scanned
    uid = forms.sha256[:16]
    pasted = {
        "sha256": forms.sha256, "SHA256 upper": forms.sha256.upper(), "sha256 tag": f"sha256:{forms.sha256}",
        "autov2": forms.autov2, "autov2 A1111 title": f"[{forms.autov2.upper()}]",
        "sha256_short (A1111 LoRA hash)": forms.sha256[:12], "autov1": forms.autov1.upper(),
        "crc32": forms.crc32, "blake3": forms.blake3, "blake3 InvokeAI": f"blake3:{forms.blake3}",
        "autov3": forms.autov3, "autov3 Civitai": forms.autov3[:12].upper(), "0x crc": f"0x{forms.crc32}",
    }
    for what, value in pasted.items():
        found = reg.find_by_hash(value)
        assert found is not None and found["uid"] == uid, what
        assert found["abs_path"] == str(path)
    civitai = forms.civitai()
    assert {reg.find_by_hash(v)["uid"] for v in civitai.values()} == {uid}


def test_no_hash_or_unknown_hash(scanned):
    reg, forms, _ = scanned
    assert reg.find_by_hash("0" * 64) is None
    assert reg.find_by_hash("deadbeef00") is None
    assert reg.find_by_hash("not a hash") is None  # the original call never raised
    with pytest.raises(ValueError, match="hex digits"):
        reg.find_by_any_hash("abc", strict=True)


def test_prefixes_resolve_for_assets_registered_before_aliases(ws, tmp_path):
    reg = AssetRegistry("default", ws=ws, make_thumbnails=False)
    src = tmp_path / "a.png"
    src.write_bytes(b"\x89PNG not really" * 10)
    rec = reg.register_file(src, "images")
    assert reg.find_by_hash(rec["hash"][:10].upper())["uid"] == rec["uid"]  # AutoV2 of a queue-registered file
    assert reg.find_by_hash(rec["hash"][:12])["uid"] == rec["uid"]


def test_the_alias_lookup_uses_the_index(scanned):
    reg, forms, _ = scanned
    plan = " ".join(r[3] for r in reg.db.conn.execute(
        "EXPLAIN QUERY PLAN SELECT DISTINCT sha256 FROM hash_aliases WHERE value = ? AND form IN (?, ?)",
        (forms.crc32, "crc32", "autov1")))
    assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), plan
    assert Path(reg.db.path).is_file()
