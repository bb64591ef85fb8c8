"""Several processes on one workspace: concurrent registration and bulk edits, and processes
killed (SIGKILL) in the middle of a change, after which recover() leaves all of it or none."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from comfyvn.studio.core.asset_registry import AssetRegistry, split_metadata

PROJECT = "mp"

# A child that registers/updates/removes with one step replaced by "SIGKILL myself here".
CRASH_CHILD = r"""
import json, os, signal, sys
from pathlib import Path
import comfyvn.registry.placement as placemod
import comfyvn.registry.sidecars as sidecarmod
from comfyvn.registry.listeners import Listeners
from comfyvn.registry.placement import Placement
from comfyvn.registry.removal import Removal
from comfyvn.registry.sidecars import Sidecars
from comfyvn.studio.core.asset_registry import AssetRegistry

point, action, arg = sys.argv[1], sys.argv[2], sys.argv[3]
reg = AssetRegistry(sys.argv[4], make_thumbnails=False)  # opened (and recovered) before any patching
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

def after(owner, name, cond=lambda *a, **k: True):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        out = real(*a, **k)
        if cond(*a, **k):
            die()
        return out
    setattr(owner, name, wrapper)

def before(owner, name, cond=lambda *a, **k: True):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        if cond(*a, **k):
            die()
        return real(*a, **k)
    setattr(owner, name, wrapper)

if point == "copied":            # the copy sits in the incoming folder, nothing journalled yet
    after(placemod, "copy_and_hash")
elif point == "journalled":      # the intent committed, the file not placed
    before(Placement, "place")
elif point == "linked":          # hard link made, temp/source not yet unlinked
    after(os, "link")
elif point == "placed":          # file at its final name, no row
    after(Placement, "place")
elif point == "sidecar_tmp":     # sidecar temp file written, not renamed, transaction open
    before(os, "replace", lambda src, dst, *a, **k: str(dst).endswith(".asset.json"))
elif point == "sidecar":         # sidecar in place, row transaction not committed
    after(sidecarmod, "atomic_write_json")
elif point == "committed":       # row, events and sidecar committed; hooks never ran
    before(Listeners, "run")
elif point == "pause":           # file placed, then wait for the parent (a live process)
    real = Placement.place
    def paused(self, *a, **k):
        out = real(self, *a, **k)
        print("PAUSED", flush=True)
        sys.stdin.readline()
        return out
    Placement.place = paused
elif point == "remove":          # row deleted and journalled, files not yet moved
    before(Removal, "finish")
elif point == "update":          # new tags committed, sidecar not yet rewritten
    before(Sidecars, "sync")

if action == "copy":
    reg.register_file(arg, "docs", tags=["crash"])
elif action == "move":
    reg.register_file(arg, "docs", copy=False, tags=["crash"])
elif action == "remove":
    reg.remove_asset(arg)
elif action == "update":
    reg.bulk_update_tags([arg], add_tags=["after-crash"])
print("DONE", flush=True)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_child(env: dict, point: str, action: str, arg: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CRASH_CHILD, point, action, arg, PROJECT], env=env,
                          capture_output=True, text=True, **kw)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def assert_all_or_nothing(reg: AssetRegistry, source: Path, digest: str, *, moved: bool, expect: str) -> None:
    """Either row + file + matching sidecar, or no trace at all (and a moved source back home)."""
    rel = f"docs/{source.name}"
    final, sidecar = reg.assets_root / rel, reg.sidecar_path_for(rel)
    row = reg.get_asset(digest[:16])
    if expect == "all":
        assert row is not None and row["path"] == rel
        assert sha(final) == digest
        assert json.loads(sidecar.read_text()) == reg.sidecar_document(row)
        assert not source.exists() if moved else sha(source) == digest
    else:
        assert row is None and reg.count() == 0
        assert not final.exists() and not sidecar.exists()
        assert source.exists() and sha(source) == digest  # a move is undone, a copy never touched it
    assert reg.db.query_one("SELECT COUNT(*) FROM file_intents")[0] == 0
    assert temp_files(reg.assets_root) == []
    assert reg.pending_recovery() == []


CRASH_POINTS = [
    ("copied", "copy", "nothing"), ("journalled", "copy", "nothing"), ("linked", "copy", "nothing"),
    ("placed", "copy", "nothing"), ("sidecar_tmp", "copy", "nothing"), ("sidecar", "copy", "nothing"),
    ("committed", "copy", "all"),
    ("journalled", "move", "nothing"), ("linked", "move", "nothing"), ("placed", "move", "nothing"),
    ("sidecar", "move", "nothing"), ("committed", "move", "all"),
]


@pytest.mark.parametrize(("point", "action", "expect"), CRASH_POINTS, ids=[f"{a}-{p}" for p, a, _ in CRASH_POINTS])
def test_sigkill_during_register_then_recover(ws, subprocess_env, tmp_path, point, action, expect):
    source = (ws.staging_dir if action == "move" else tmp_path / "src") / "crash me.txt"  # moves: hand-offs only
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(os.urandom(4096))
    digest = sha(source)
    result = run_child(subprocess_env, point, action, str(source))
    assert result.returncode == -signal.SIGKILL, result.stderr
    reg = AssetRegistry(PROJECT, recover=False)
    if point not in ("copied", "committed"):
        assert reg.pending_recovery(), "the killed process should have left a journalled operation"
    stats = reg.recover()
    assert stats["skipped_live"] == 0
    assert_all_or_nothing(reg, source, digest, moved=action == "move", expect=expect)
    assert reg.recover() == {k: 0 for k in stats}  # nothing left to do
    if expect == "nothing":  # and the file can be registered normally afterwards
        rec = reg.register_file(source, "docs", copy=action == "copy")
        assert rec["uid"] == digest[:16] and sha(rec["abs_path"]) == digest


def test_sigkill_during_remove_is_finished_by_recover(ws, subprocess_env, tmp_path):
    reg = AssetRegistry(PROJECT, make_thumbnails=False)
    source = tmp_path / "bye.txt"
    source.write_text("to be removed")
    rec = reg.register_file(source, "docs")
    result = run_child(subprocess_env, "remove", "remove", rec["uid"])
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert Path(rec["abs_path"]).exists() and reg.get_asset(rec["uid"]) is None  # half done
    assert reg.recover()["finished"] == 1
    assert not Path(rec["abs_path"]).exists() and not Path(rec["sidecar"]).exists()
    trashed = list(ws.trash_dir.rglob("bye.txt"))
    assert len(trashed) == 1 and trashed[0].read_text() == "to be removed"
    assert (trashed[0].parent / "bye.txt.asset.json").exists()


def test_sigkill_before_the_sidecar_rewrite_is_repaired_by_recover(ws, subprocess_env, tmp_path):
    reg = AssetRegistry(PROJECT, make_thumbnails=False)
    source = tmp_path / "tagged.txt"
    source.write_text("tag me")
    rec = reg.register_file(source, "docs", tags=["before"])
    result = run_child(subprocess_env, "update", "update", rec["uid"])
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert reg.get_asset(rec["uid"])["tags"] == ["before", "after-crash"]
    assert json.loads(Path(rec["sidecar"]).read_text())["tags"] == ["before"]  # stale on disk
    assert reg.recover()["sidecars"] == 1
    assert reg.read_sidecar(rec["uid"]) == reg.sidecar_document(reg.get_asset(rec["uid"]))


def test_recover_leaves_a_live_process_alone(ws, subprocess_env, tmp_path):
    source = tmp_path / "slow.txt"
    source.write_text("in flight")
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, "pause", "copy", str(source), PROJECT],
                             env=subprocess_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "PAUSED"
        reg = AssetRegistry(PROJECT, make_thumbnails=False)
        placed = reg.assets_root / "docs" / "slow.txt"
        assert placed.exists()
        stats = reg.recover()
        assert stats["skipped_live"] == 1 and stats["undone"] == 0
        assert placed.exists() and reg.pending_recovery() == []
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0 and "DONE" in out, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rec = reg.find_by_hash(sha(source))
    assert rec is not None and reg.read_sidecar(rec["uid"])["tags"] == ["crash"]
    assert reg.db.query_one("SELECT COUNT(*) FROM file_intents")[0] == 0


# ------------------------------------------------------------------------------ concurrency
BULK_CHILD = r"""
import sys
from comfyvn.studio.core.asset_registry import AssetRegistry
reg = AssetRegistry(sys.argv[1], make_thumbnails=False)
who, rounds = sys.argv[2], int(sys.argv[3])
uids = [a["uid"] for a in reg.iter_assets()]
for i in range(rounds):
    reg.bulk_update_tags(uids, add_tags=[f"{who}-{i}"])
    reg.update_asset_meta(uids[0], {who: i, "shared": {who: i}})
"""

REGISTER_CHILD = r"""
import json, sys
from pathlib import Path
from comfyvn.studio.core.asset_registry import AssetRegistry
reg = AssetRegistry(sys.argv[1], make_thumbnails=False)
out = {}
for path in sorted(Path(sys.argv[2]).iterdir()):
    out[path.name] = reg.register_file(path, "docs", tags=[sys.argv[3]])["uid"]
print(json.dumps(out))
"""


def _spawn(code: str, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_bulk_tagging_lose_no_update(ws, subprocess_env, tmp_path):
    reg = AssetRegistry(PROJECT, make_thumbnails=False)
    for i in range(12):
        f = tmp_path / f"asset{i:02d}.txt"
        f.write_text(f"asset {i}")
        reg.register_file(f, "docs")
    rounds = 12
    procs = [_spawn(BULK_CHILD, subprocess_env, PROJECT, who, str(rounds)) for who in ("a", "b")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    assert not any("locked" in err for _, err in results)
    expected = {f"{w}-{i}" for w in "ab" for i in range(rounds)}
    assets = list(reg.iter_assets())  # path order: the children edited the meta of assets[0]
    for asset in assets:
        assert set(asset["tags"]) == expected
        assert reg.read_sidecar(asset["uid"]) == reg.sidecar_document(asset)
    last = rounds - 1
    assert split_metadata(assets[0]["meta"])[0] == {"a": last, "b": last, "shared": {"a": last, "b": last}}
    assert assets[0]["version"] == 1 + 4 * rounds  # every single change counted
    assert {a["version"] for a in assets[1:]} == {1 + 2 * rounds}
    assert len(reg.list_assets(tags=["a-0", f"b-{last}"], limit=100)) == len(assets)


def test_two_processes_registering_at_once(ws, subprocess_env, tmp_path):
    shared = [os.urandom(2000) for _ in range(8)]
    for who in ("a", "b"):
        folder = tmp_path / who
        folder.mkdir()
        for i in range(20):
            (folder / f"{who}_own_{i:02d}.bin").write_bytes(os.urandom(1500))
        for i, data in enumerate(shared):  # the same bytes under a different name in each folder
            (folder / f"{who}_shared_{i}.bin").write_bytes(data)
    procs = [_spawn(REGISTER_CHILD, subprocess_env, PROJECT, str(tmp_path / who), who) for who in ("a", "b")]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1] for r in results]
    uid_maps = [json.loads(out) for out, _ in results]
    for i in range(len(shared)):
        assert uid_maps[0][f"a_shared_{i}.bin"] == uid_maps[1][f"b_shared_{i}.bin"]
    reg = AssetRegistry(PROJECT, make_thumbnails=False)
    assert reg.count() == 20 + 20 + len(shared)
    on_disk = sorted(p for p in reg.assets_root.rglob("*") if p.is_file())
    rows = list(reg.iter_assets())
    assert len(on_disk) == 2 * len(rows)  # one file + one sidecar per row, no stray copies or temp files
    for row in rows:
        assert sha(row["abs_path"]) == row["hash"]
        assert reg.read_sidecar(row["uid"]) == reg.sidecar_document(reg.get_asset(row["uid"]))
    shared_rows = [r for r in rows if "_shared_" in r["path"]]
    assert len(shared_rows) == len(shared) and all(set(r["tags"]) <= {"a", "b"} for r in shared_rows)
    assert reg.db.query_one("SELECT COUNT(*) FROM file_intents")[0] == 0
