"""Several processes on one workspace queue: the same bytes are staged once, jobs are applied once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import AssetIngestQueue
from comfyvn.studio.core.asset_registry import AssetRegistry

ENQUEUE = """
import json, sys, time
from comfyvn.ingest import get_ingest_queue
q = get_ingest_queue()
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.0005)
print(json.dumps(q.enqueue(source_path=sys.argv[1])))
"""

APPLY = """
import json, sys, time
from comfyvn.ingest import get_ingest_queue
q = get_ingest_queue()
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.0005)
r = q.apply()
print(json.dumps({k: [j["job_id"] if isinstance(j, dict) else j for j in v] for k, v in r.items()}))
"""


def run_all(script: str, argv: list[list[str]], env: dict) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in argv]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_processes_enqueueing_the_same_bytes_at_once_stage_it_exactly_once(ws, subprocess_env):
    data = os.urandom(4 << 20)
    sources = []
    for i in range(4):
        path = ws.root / "in" / f"copy{i}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        sources.append(str(path))
    AssetIngestQueue(ws)  # migrate once up front so the children race on enqueue, not on schema
    start = str(time.time() + 2.0)
    jobs = run_all(ENQUEUE, [[s, start] for s in sources], subprocess_env)
    staged = [j for j in jobs if j["status"] == "staged"]
    dups = [j for j in jobs if j["status"] == "duplicate"]
    assert len(staged) == 1 and len(dups) == 3
    assert {d["dedup_of"] for d in dups} == {staged[0]["job_id"]}
    assert all(d["notes"] == ["duplicate.staged"] for d in dups)
    leftovers = [p for p in ws.staging_dir.rglob("*") if p.is_file()]
    assert leftovers == [ws.staging_dir / staged[0]["job_id"] / os.path.basename(staged[0]["source_path"])]
    enq = get_hook_bus(ws.db_path).history(100, topics=["on_asset_ingest_enqueued"])
    assert sorted(e["data"]["status"] for e in enq) == ["duplicate"] * 3 + ["staged"]


def test_processes_applying_the_same_queue_apply_each_job_once(ws, subprocess_env):
    q = AssetIngestQueue(ws)
    ids = []
    for i in range(24):
        path = ws.root / "in" / f"f{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"file {i}".encode() * 100)
        ids.append(q.enqueue(source_path=path)["job_id"])
    start = str(time.time() + 2.0)
    results = run_all(APPLY, [[start], [start]], subprocess_env)
    applied = [j for r in results for j in r["applied"]]
    assert sorted(applied) == sorted(ids)  # every job once, none twice
    assert all(r["failed"] == [] and r["unknown"] == [] for r in results)
    assert {q.get(i)["status"] for i in ids} == {"applied"}
    reg = AssetRegistry(ws=ws)
    assert reg.count() == 24
    assert all(os.path.isfile(a["abs_path"]) and os.path.isfile(a["sidecar"]) for a in reg.iter_assets())
    assert len(get_hook_bus(ws.db_path).history(100, topics=["on_asset_ingest_applied"])) == 24
    assert [p for p in ws.staging_dir.iterdir()] == []
