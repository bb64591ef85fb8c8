"""A process SIGKILLed at any point of enqueue/apply leaves, after restart, every job applied
(row + file + sidecar) or staged and re-appliable: no row without file, no file without row,
no lost job."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import AssetIngestQueue
from comfyvn.ingest.queue import CRASH_ENV
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import SIDECAR_SUFFIX, AssetRegistry

# Points inside the registry are reached by wrapping its methods in the child (fault injection);
# the queue's own points use COMFYVN_INGEST_CRASH_AT.  apply() commits jobs in groups of
# APPLY_BATCH: with a batch of 1, "#2" = on the second job; with one batch for all three jobs, a
# kill before the group commit leaves all three staged and a kill after it all three applied.
APPLY_CHILD = """
import os, signal, sys
import comfyvn.ingest.queue as queue_module
from comfyvn.studio.core.asset_registry import AssetRegistry
point = sys.argv[1]
queue_module.APPLY_BATCH = int(sys.argv[2])
hits = {"n": 0}

def kill_on_second(fn, before):
    def wrapper(*args, **kwargs):
        hits["n"] += 1
        if before and hits["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        out = fn(*args, **kwargs)
        if not before and hits["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapper

if point == "registry.placed":          # file moved into the assets root, row not committed
    from comfyvn.registry.placement import Placement
    Placement.place = kill_on_second(Placement.place, before=False)
elif point == "registry.sidecar_written":  # sidecar written, row not committed yet
    import comfyvn.registry.sidecars as sidecar_module
    sidecar_module.atomic_write_json = kill_on_second(sidecar_module.atomic_write_json, before=False)
from comfyvn.ingest import get_ingest_queue
get_ingest_queue().apply()
print("survived")
"""

S, A = "staged", "applied"
POINTS = [  # (crash point, APPLY_BATCH, statuses of the three jobs after the restart)
    ("apply.claimed#2", 1, (A, S, S)), ("apply.registered#2", 1, (A, A, S)), ("apply.committed#2", 1, (A, A, S)),
    ("apply.claimed", 128, (S, S, S)), ("registry.placed", 128, (S, S, S)),  # killed after the 2nd file moved
    ("registry.sidecar_written", 128, (S, S, S)),  # killed after the 2nd sidecar, inside the group commit
    ("apply.registered", 128, (A, A, A)), ("apply.committed", 128, (A, A, A)),
]


def stage_three(ws) -> tuple[AssetIngestQueue, dict[str, bytes]]:
    q = AssetIngestQueue(ws)
    contents = {}
    for i in range(3):
        data = os.urandom(64 * 1024 + i)
        src = ws.root / "in" / f"sprite{i}.bin"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        contents[q.enqueue(source_path=src, pin=True)["job_id"]] = data
    return q, contents


def kill_child(script: str, args: list[str], env: dict) -> None:
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


def check_invariants(ws, q: AssetIngestQueue, contents: dict[str, bytes]) -> dict[str, str]:
    reg = AssetRegistry(ws=ws)
    statuses = {}
    for job_id, data in contents.items():
        job = q.get(job_id)
        assert job is not None, f"lost job {job_id}"
        statuses[job_id] = job["status"]
        assert job["status"] in ("applied", "staged"), job
        if job["status"] == "applied":
            asset = reg.get_asset(job["asset_uid"])
            assert asset is not None and Path(asset["abs_path"]).read_bytes() == data
            assert reg.read_sidecar(asset["uid"])["hash"] == hashlib.sha256(data).hexdigest()
        else:
            assert Path(job["staging_path"]).read_bytes() == data
            assert reg.find_by_hash(hashlib.sha256(data).hexdigest()) is None
    rows = {a["path"] for a in reg.iter_assets()}
    for a in reg.iter_assets():  # no row without file + sidecar
        assert Path(a["abs_path"]).is_file() and Path(a["sidecar"]).is_file()
    on_disk = {str(p.relative_to(reg.assets_root)) for p in reg.assets_root.rglob("*")
               if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)}
    assert on_disk == rows  # no file without row (and no stray temp file)
    sidecars = {str(p.relative_to(reg.assets_root))[: -len(SIDECAR_SUFFIX)]
                for p in reg.assets_root.rglob(f"*{SIDECAR_SUFFIX}")}
    assert sidecars == rows
    return statuses


@pytest.mark.parametrize(("point", "batch", "expected"), POINTS, ids=[f"{p}-batch{b}" for p, b, _ in POINTS])
def test_kill_during_apply_then_restart(ws, subprocess_env, point, batch, expected):
    _, contents = stage_three(ws)
    env = dict(subprocess_env)
    if not point.startswith("registry."):
        env[CRASH_ENV] = point
    kill_child(APPLY_CHILD, [point, str(batch)], env)

    q = AssetIngestQueue(ws)  # "restart": opening the queue recovers
    statuses = check_invariants(ws, q, contents)
    assert tuple(statuses[j] for j in contents) == expected
    for job_id in contents:  # a job still staged keeps its pin
        if statuses[job_id] == "staged":
            assert q.dedup_snapshot()[q.get(job_id)["digest"]]["pinned"] is True

    result = q.apply()  # everything still staged is re-appliable
    assert result["failed"] == []
    assert set(check_invariants(ws, q, contents).values()) == {"applied"}
    applied_events = get_hook_bus(open_store(ws)).history(100, topics=["on_asset_ingest_applied"])
    assert sorted(e["data"]["job_id"] for e in applied_events) == sorted(contents)  # each job once
    assert all(q.get(j)["pin"] is False for j in contents)


ENQUEUE_CHILD = """
import sys
from comfyvn.ingest import get_ingest_queue
get_ingest_queue().enqueue(source_path=sys.argv[1])
print("survived")
"""


def test_kill_during_enqueue_loses_no_job_and_blocks_nothing(ws, subprocess_env):
    src = ws.root / "in" / "bg.png"
    src.parent.mkdir()
    src.write_bytes(os.urandom(10_000))
    AssetIngestQueue(ws)
    kill_child(ENQUEUE_CHILD, [str(src)], {**subprocess_env, CRASH_ENV: "enqueue.staged"})
    q = AssetIngestQueue(ws)
    assert q.list_jobs() == []  # the call never returned a job, and none half exists
    job = q.enqueue(source_path=src)  # the orphan copy does not block the same bytes
    assert job["status"] == "staged"
    assert json.loads(json.dumps(q.apply()))["applied"][0]["status"] == "applied"


ENQUEUE_MANY_CHILD = """
import os, signal, sys
point, paths = sys.argv[1], sys.argv[2:]
if point == "copy":  # killed halfway through copying the 4th file into its temporary file
    import comfyvn.sources as sources
    real_copy, hits = sources.OpenedSource.copy_into, {"n": 0}

    def copy_into(self, dest_fh, *, fsync=True):
        hits["n"] += 1
        if hits["n"] == 4:
            dest_fh.write(b"half of it")
            dest_fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_copy(self, dest_fh, fsync=fsync)
    sources.OpenedSource.copy_into = copy_into
from comfyvn.ingest import get_ingest_queue
get_ingest_queue().enqueue_many(paths, chunk_size=3)
print("survived")
"""

# (crash point, jobs recorded after the restart): 7 files in chunks of 3 ([0-2], [3-5], [6])
MANY_POINTS = [("enqueue_many.file_staged#5", 3), ("enqueue_many.staged", 0), ("enqueue_many.staged#2", 3),
               ("enqueue_many.committed#2", 6), ("copy", 3)]


@pytest.mark.parametrize(("point", "recorded"), MANY_POINTS, ids=[p for p, _ in MANY_POINTS])
def test_kill_during_enqueue_many_then_restart(ws, subprocess_env, point, recorded):
    contents = [os.urandom(4096 + i) for i in range(7)]
    paths = []
    for i, data in enumerate(contents):
        paths.append(ws.root / "in" / f"tile{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_bytes(data)
    AssetIngestQueue(ws)
    env = dict(subprocess_env)
    if point != "copy":
        env[CRASH_ENV] = point
    kill_child(ENQUEUE_MANY_CHILD, [point, *map(str, paths)], env)

    q = AssetIngestQueue(ws)  # "restart": opening the queue recovers and sweeps
    jobs = q.list_jobs(limit=100)
    by_source = {j["source_path"]: j for j in jobs}
    assert sorted(by_source) == sorted(str(p) for p in paths[:recorded])  # whole chunks, in order
    for path, data in zip(paths[:recorded], contents, strict=False):  # no row without its bytes
        job = by_source[str(path)]
        assert job["status"] == "staged" and Path(job["staging_path"]).read_bytes() == data
    leftovers = [p for p in q.staging_dir.iterdir() if p.name[:12] not in {j["job_id"] for j in jobs}]
    assert not [p for p in leftovers if p.name.startswith(".")]  # the dead writer's temp files are gone
    for orphan in leftovers:  # a staged copy whose chunk never committed: complete, and swept when stale
        assert orphan.read_bytes() in contents
        os.utime(orphan, (orphan.stat().st_atime, orphan.stat().st_mtime - 2 * 3600))
    assert q.staging.sweep() == len(leftovers)

    again = q.enqueue_many(paths)  # the whole batch once more: what was recorded is not staged twice
    statuses = [j["status"] for j in again["jobs"]]
    assert statuses == ["duplicate"] * recorded + ["staged"] * (7 - recorded)
    result = q.apply()
    assert len(result["applied"]) == 7 and result["failed"] == []
    reg = AssetRegistry(ws=ws)
    assert sorted(Path(a["abs_path"]).read_bytes() for a in reg.iter_assets()) == sorted(contents)
    assert {p.name for p in q.staging_dir.iterdir()} == set()


@pytest.mark.parametrize(("point", "expected"), [("apply.claimed", "staged"), ("registry.placed", "staged"),
                                                 ("registry.sidecar_written", "staged"),
                                                 ("apply.registered", "applied")])
def test_kill_while_applying_a_batch_staged_by_enqueue_many(ws, subprocess_env, point, expected):
    """A batch big enough to be made durable by one syncfs: all-or-nothing like any group commit."""
    q = AssetIngestQueue(ws)
    contents = {}
    for i in range(20):
        data = os.urandom(2048 + i)
        src = ws.root / "in" / f"icon{i}.png"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        contents[src] = data
    jobs = q.enqueue_many(list(contents))["jobs"]
    contents = {job["job_id"]: data for job, data in zip(jobs, contents.values(), strict=True)}
    env = dict(subprocess_env)
    if not point.startswith("registry."):
        env[CRASH_ENV] = point
    kill_child(APPLY_CHILD, [point, "128"], env)

    q = AssetIngestQueue(ws)
    assert set(check_invariants(ws, q, contents).values()) == {expected}
    assert q.apply()["failed"] == []
    assert set(check_invariants(ws, q, contents).values()) == {"applied"}
