"""Lease settings that would let another server's recovery take back a claim still at work: a lease
shorter than the renewal period is still renewed in time (at least three times per lease); a
lease or renewal of zero or less is a ConfigError naming both, before anything is claimed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_ingest_lease import q  # noqa: F401  (the queue fixture, fast rate limits)

from comfyvn.config import ConfigError, update_config
from comfyvn.ingest.jobs import JobStatus
from comfyvn.ingest.queue import AssetIngestQueue
from comfyvn.registry.placement import Placement

OTHER_SERVER = """
import json
from comfyvn.ingest.queue import AssetIngestQueue
print(json.dumps(AssetIngestQueue().recover()))
"""



def stage_two(q: AssetIngestQueue, ws) -> list[str]:  # noqa: F811
    ids = []
    for i in range(2):
        src = ws.root / "in" / f"s{i}.bin"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(os.urandom(4096 + i))
        ids.append(q.enqueue(source_path=src, pin=True)["job_id"])
    return ids


@pytest.mark.parametrize("settings", [{"lease_s": 0.5}, {"lease_s": 0.4, "lease_renew_s": 2}])
def test_a_lease_shorter_than_its_renewal_period_is_still_renewed_in_time(q, ws, monkeypatch, subprocess_env,  # noqa: F811
                                                                          settings):
    # lease_s lowered below the default lease_renew_s (10 s), or below a renewal period set: before, the apply's claims
    # lapsed between two renewals and another server's recovery took them back mid-apply (all failed)
    ids = stage_two(q, ws)
    update_config({"ingest": settings}, ws)
    real_place, recoveries = Placement.place, []

    def slow_place(self, *args, **kwargs):  # a slow share; another server's recovery runs meanwhile
        time.sleep(0.7)
        proc = subprocess.run([sys.executable, "-c", OTHER_SERVER], env=subprocess_env, capture_output=True,
                              text=True, timeout=120, check=True)
        recoveries.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        return real_place(self, *args, **kwargs)
    monkeypatch.setattr(Placement, "place", slow_place)
    result = q.apply()
    assert sorted(j["job_id"] for j in result["applied"]) == sorted(ids) and result["failed"] == [], result
    assert len(recoveries) == 2 and not any(any(r.values()) for r in recoveries), recoveries
    assert [q.jobs.get(i)["status"] for i in ids] == [JobStatus.APPLIED] * 2


@pytest.mark.parametrize("lease, renew", [(0, 0.1), (60, 0), (-1, -2)])
def test_a_lease_or_renewal_of_zero_or_less_is_refused_before_any_claim(q, ws, lease, renew):  # noqa: F811
    ids = stage_two(q, ws)
    update_config({"ingest": {"lease_s": lease, "lease_renew_s": renew}}, ws)
    with pytest.raises(ConfigError, match=r"ingest\.lease_s .* ingest\.lease_renew_s .* above 0"):
        q.apply()
    assert [q.jobs.get(i)["status"] for i in ids] == [JobStatus.STAGED] * 2 and q.jobs.claimed() == []
