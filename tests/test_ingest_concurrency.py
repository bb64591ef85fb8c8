"""Several processes on one workspace queue: the same bytes are staged once, jobs are applied once."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from comfyvn.hooks import get_hook_bus
from comfyvn.ingest import AssetIngestQueue
from comfyvn.store import open_store
from comfyvn.studio.core.asset_registry import AssetRegistry

# children say "ready", then all start at once when the parent creates the "go" file
BARRIER = """
import os, sys, time
open(sys.argv[1] + ".ready." + str(os.getpid()), "w").close()
while not os.path.exists(sys.argv[1] + ".go"):
    time.sleep(0.0005)
"""

ENQUEUE = """
import json, sys
from comfyvn.ingest import get_ingest_queue
q = get_ingest_queue()
""" + BARRIER + """
print(json.dumps(q.enqueue(source_path=sys.argv[2])))
"""

APPLY = """
import json, sys
from comfyvn.ingest import get_ingest_queue
q = get_ingest_queue()
""" + BARRIER + """
r = q.apply()
print(json.dumps({k: [j["job_id"] if isinstance(j, dict) else j for j in v] for k, v in r.items()}))
"""


def run_all(script: str, argv: list[list[str]], env: dict, barrier: Path) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", script, str(barrier), *args], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in argv]
    deadline = time.monotonic() + 60
    while len(list(barrier.parent.glob(barrier.name + ".ready.*"))) < len(procs):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a child never got ready"
        time.sleep(0.01)
    barrier.with_name(barrier.name + ".go").touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


def test_processes_enqueueing_the_same_bytes_at_once_stage_it_exactly_once(ws, subprocess_env, tmp_path):
    data = os.urandom(4 << 20)
    sources = []
    for i in range(4):
        path = ws.root / "in" / f"copy{i}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        sources.append(str(path))
    AssetIngestQueue(ws)  # migrate once up front so the children race on enqueue, not on schema
    jobs = run_all(ENQUEUE, [[s] for s in sources], subprocess_env, tmp_path / "barrier")
    staged = [j for j in jobs if j["status"] == "staged"]
    dups = [j for j in jobs if j["status"] == "duplicate"]
    assert len(staged) == 1 and len(dups) == 3
    assert {d["dedup_of"] for d in dups} == {staged[0]["job_id"]}
    assert all(d["notes"] == ["duplicate.staged"] for d in dups)
    leftovers = [p for p in ws.staging_dir.rglob("*") if p.is_file()]
    assert leftovers == [ws.staging_dir / f"{staged[0]['job_id']}-{os.path.basename(staged[0]['source_path'])}"]
    enq = get_hook_bus(open_store(ws)).history(100, topics=["on_asset_ingest_enqueued"])
    assert sorted(e["data"]["status"] for e in enq) == ["duplicate"] * 3 + ["staged"]


def test_processes_applying_the_same_queue_apply_each_job_once(ws, subprocess_env, tmp_path):
    q = AssetIngestQueue(ws)
    ids = []
    for i in range(24):
        path = ws.root / "in" / f"f{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"file {i}".encode() * 100)
        ids.append(q.enqueue(source_path=path)["job_id"])
    results = run_all(APPLY, [[], []], subprocess_env, tmp_path / "barrier")
    applied = [j for r in results for j in r["applied"]]
    assert sorted(applied) == sorted(ids)  # every job once, none twice
    assert all(r["failed"] == [] and r["unknown"] == [] for r in results)
    assert {q.get(i)["status"] for i in ids} == {"applied"}
    reg = AssetRegistry(ws=ws)
    assert reg.count() == 24
    assert all(os.path.isfile(a["abs_path"]) and os.path.isfile(a["sidecar"]) for a in reg.iter_assets())
    assert len(get_hook_bus(open_store(ws)).history(100, topics=["on_asset_ingest_applied"])) == 24
    assert [p for p in ws.staging_dir.iterdir()] == []


ENQUEUE_MANY = """
import json, sys
from comfyvn.ingest import get_ingest_queue
q = get_ingest_queue()
""" + BARRIER + """
r = q.enqueue_many(sys.argv[2:], chunk_size=7)
print(json.dumps({"jobs": [[j["job_id"], j["status"], j["digest"]] for j in r["jobs"]], "errors": r["errors"]}))
"""


def test_processes_enqueueing_the_same_batch_at_once_stage_each_file_exactly_once(ws, subprocess_env, tmp_path):
    contents = [os.urandom(3000 + i) for i in range(30)]
    paths = []
    for i, data in enumerate(contents):
        paths.append(ws.root / "in" / f"frame{i:02d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_bytes(data)
    AssetIngestQueue(ws)
    orders = [[str(p) for p in paths], [str(p) for p in reversed(paths)], [str(p) for p in paths[10:] + paths[:10]]]
    outs = run_all(ENQUEUE_MANY, orders, subprocess_env, tmp_path / "barrier")
    assert all(out["errors"] == [] and len(out["jobs"]) == 30 for out in outs)
    staged = [job for out in outs for job in out["jobs"] if job[1] == "staged"]
    assert sorted(job[2] for job in staged) == sorted(hashlib.sha256(c).hexdigest() for c in contents)
    q = AssetIngestQueue(ws)
    assert len(list(q.staging_dir.iterdir())) == 30  # one copy per file, the duplicates' deleted
    assert len(q.apply()["applied"]) == 30 and AssetRegistry(ws=ws).count() == 30
