"""AutoV3 after registration: the scan's background phase, ``--autov3 eager|background|off``, a
rescan that reads nothing, and every hash form resolving once the phase has run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import comfyvn.library.scan as scan_mod
from comfyvn.config import update_config
from comfyvn.hashforms import hash_bytes
from comfyvn.hooks.events import read_events
from comfyvn.library.cli import main
from comfyvn.library.hashcache import cache_key
from comfyvn.library.scan import Scanner, scan_library
from comfyvn.studio.core.asset_registry import AssetRegistry

OLD_NS = 1_600_000_000 * 10**9


def make(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def safetensors(payload: bytes) -> bytes:
    header = json.dumps({"__metadata__": {"ss_name": "x"}}).encode()
    return len(header).to_bytes(8, "little") + header + payload


def autov3_of(data: bytes) -> str:
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n:]).hexdigest()


@pytest.fixture
def models(ws, tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(scan_mod, "DEFER_AUTOV3_FROM", 1)  # these small files stand for big ones
    root = tmp_path / "models"
    make(root / "checkpoints" / "base.safetensors", safetensors(b"checkpoint" * 1000))
    make(root / "loras" / "style.safetensors", safetensors(b"lora bytes" * 300))
    make(root / "loras" / "broken.safetensors", b"no header here" * 20)  # no AutoV3 exists
    make(root / "embeddings" / "neg.pt", b"embedding" * 50)  # not a safetensors file
    update_config({"library": {"roots": [{"name": "m", "path": str(root), "layout": "comfyui"}]}}, ws)
    return root


def reg(ws) -> AssetRegistry:
    return AssetRegistry("default", ws=ws, make_thumbnails=False)


def pending(ws) -> int:
    return reg(ws).db.query_one("SELECT count(*) FROM library_autov3_pending")[0]


def test_background_phase_fills_the_aliases_after_registration(ws, models):
    lora = (models / "loras" / "style.safetensors").read_bytes()
    seen: dict = {}

    def then(report):  # the first phase is over: registered, findable by every other form
        r = reg(ws)
        seen["by_sha"] = r.find_by_hash(hash_bytes(lora).sha256)
        seen["by_blake3"] = r.find_by_hash("blake3:" + hash_bytes(lora).blake3)
        seen["by_autov3"] = r.find_by_hash(autov3_of(lora))
        seen["pending"] = pending(ws)

    phases: list[dict] = []
    scanner = Scanner(ws, "default", registry=reg(ws))
    report = scanner.run(progress=phases.append, then=then)
    assert seen["by_sha"] is not None and seen["by_blake3"]["uid"] == seen["by_sha"]["uid"]
    assert seen["by_autov3"] is None and seen["pending"] == 3  # two valid, one without a header
    # the first pass did not compute AutoV3: one SHA-256 + BLAKE3 + CRC32 read per file
    assert report.hashed_files == 4 and report.autov3["queued"] == 3
    assert report.autov3["mode"] == "background" and report.autov3["files"] == 3 and report.autov3["pending"] == 0
    assert report.autov3["errors"] == []
    r = reg(ws)
    uid = seen["by_sha"]["uid"]
    for form in (autov3_of(lora), autov3_of(lora)[:12].upper()):  # Civitai's AutoV3 and the full value
        assert r.find_by_hash(form)["uid"] == uid
    base = (models / "checkpoints" / "base.safetensors").read_bytes()
    assert r.find_by_hash(autov3_of(base))["path"].endswith("base.safetensors")
    assert pending(ws) == 0
    cache_value = scanner.cache.autov3_state(cache_key(os.stat(models / "loras" / "style.safetensors")))
    assert cache_value == autov3_of(lora)  # the hash cache has it too
    assert scanner.cache.autov3_state(cache_key(os.stat(models / "loras" / "broken.safetensors"))) == ""
    v3 = [p for p in phases if p["phase"] == "autov3"]
    assert v3 and v3[0]["files_total"] == 3 and v3[-1]["files_done"] == 3
    assert v3[-1]["bytes_done"] > 0 and phases[-1]["phase"] == "done" and phases[-1]["autov3_files"] == 3
    # hook events: the summary comes before the AutoV3 phase, whose progress follows it
    events = read_events(r.db.conn, topics=["on_library_scan_finished", "on_library_scan_progress"])
    order = [(e["event"], e["data"].get("phase")) for e in events]
    finished = order.index(("on_library_scan_finished", None))
    assert events[finished]["data"]["autov3_pending"] == 3
    assert ("on_library_scan_progress", "autov3") in order[finished:] and order[-1] == ("on_library_scan_progress",
                                                                                          "done")


def test_rescan_reads_no_byte_and_never_recomputes_autov3(ws, models):
    scan_library(ws=ws, registry=reg(ws))
    scanner = Scanner(ws, "default", registry=reg(ws))
    report = scanner.run()
    assert report.unchanged == 4 and report.autov3["files"] == 0 and report.autov3["pending"] == 0
    assert scanner.cache.counters()["files_read"] == 0 and scanner.cache.counters()["bytes_read"] == 0
    # a copy of known bytes (another inode: a cache miss) is hashed, but its AutoV3 is taken from the aliases
    lora = models / "loras" / "style.safetensors"
    make(models / "loras" / "copy.safetensors", lora.read_bytes())
    scanner = Scanner(ws, "default", registry=reg(ws))
    report = scanner.run()
    assert report.hashed_files == 1 and report.autov3["files"] == 0 and pending(ws) == 0


def test_autov3_off_leaves_it_queued_for_a_later_scan(ws, models):
    first = scan_library(ws=ws, registry=reg(ws), autov3="off")
    assert first.autov3 == {"mode": "off", "queued": 3, "pending": 3, "files": 0, "bytes": 0, "seconds": 0.0,
                            "errors": []}
    lora = (models / "loras" / "style.safetensors").read_bytes()
    assert reg(ws).find_by_hash(autov3_of(lora)) is None and pending(ws) == 3
    scanner = Scanner(ws, "default", registry=reg(ws))  # background: only the AutoV3 passes are read
    later = scanner.run()
    assert later.hashed_files == 0 and later.autov3["files"] == 3 and pending(ws) == 0
    assert reg(ws).find_by_hash(autov3_of(lora)) is not None


def test_autov3_eager_computes_it_in_the_first_pass(ws, models):
    seen = {}
    scanner = Scanner(ws, "default", registry=reg(ws), autov3="eager")
    lora = (models / "loras" / "style.safetensors").read_bytes()
    report = scanner.run(then=lambda _r: seen.setdefault("hit", reg(ws).find_by_hash(autov3_of(lora))))
    assert seen["hit"] is not None and report.autov3["files"] == 0 and pending(ws) == 0
    with pytest.raises(ValueError, match="autov3 must be one of"):
        Scanner(ws, "default", registry=reg(ws), autov3="later")


def test_a_file_changed_before_its_autov3_pass_is_reported_and_hashed_again_next_time(ws, models):
    lora = models / "loras" / "style.safetensors"

    def edit(_report):
        make(lora, safetensors(b"retrained" * 300), mtime_ns=OLD_NS + 10**9)

    report = Scanner(ws, "default", registry=reg(ws)).run(then=edit)
    assert [Path(e["path"]).name for e in report.autov3["errors"]] == ["style.safetensors"]
    assert "changed since it was hashed" in report.autov3["errors"][0]["error"]
    again = Scanner(ws, "default", registry=reg(ws)).run()
    assert again.changed == ["m:loras/style.safetensors"] and again.autov3["files"] == 1
    assert reg(ws).find_by_hash(autov3_of(lora.read_bytes())) is not None
    assert pending(ws) == 0  # the old content's entry went with its file


def test_cli_autov3_option(ws, models, capsys):
    assert main(["scan", "--json", "--autov3", "off", "--workspace", str(ws.root)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["autov3"]["mode"] == "off" and out["autov3"]["pending"] == 3
    assert main(["scan", "--workspace", str(ws.root)]) == 0  # default: background
    text = capsys.readouterr().out
    assert "AutoV3: 3 files" in text and pending(ws) == 0
    with pytest.raises(SystemExit) as exc:
        main(["scan", "--autov3", "soon", "--workspace", str(ws.root)])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
