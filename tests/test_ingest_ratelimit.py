"""Token buckets per provider key, stored in the workspace database and shared by processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from comfyvn.config import update_config
from comfyvn.ingest.errors import IngestError
from comfyvn.ingest.ratelimit import DEFAULT_RATE_LIMIT, RateLimiter
from comfyvn.store import open_store


@pytest.fixture
def limiter(ws):
    return RateLimiter(open_store(ws), ws)


def test_default_rate_is_about_one_request_every_three_seconds(ws, limiter):
    now = 1_000_000.0
    assert limiter.config("civitai").rate == DEFAULT_RATE_LIMIT == pytest.approx(0.33)
    assert limiter.try_acquire("civitai", now=now) == 0.0
    assert limiter.try_acquire("civitai", now=now) == pytest.approx(1 / 0.33)
    assert limiter.try_acquire("civitai", now=now + 3.1) == 0.0


def test_burst_refill_and_keys_are_independent(ws, limiter):
    update_config({"ingest": {"rate_limit_rps": 2, "rate_limit_burst": 3}}, ws)
    now = 2_000_000.0
    assert [limiter.try_acquire("hf", now=now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("hf", now=now) == pytest.approx(0.5)
    assert limiter.try_acquire("civitai", now=now) == 0.0  # another key, another bucket
    assert limiter.try_acquire("hf", now=now + 0.5) == 0.0
    assert limiter.try_acquire("hf", now=now + 100) == 0.0  # refills only up to the burst
    assert [limiter.try_acquire("hf", now=now + 100) for _ in range(2)] == [0.0, 0.0]
    assert limiter.try_acquire("hf", now=now + 100) > 0


def test_per_provider_settings_override_the_default(ws, limiter):
    update_config({"ingest": {"rate_limit_rps": 0.5, "providers": {"huggingface": {"rate_limit_rps": 10,
                                                                                  "rate_limit_burst": 4}}}}, ws)
    assert (limiter.config("huggingface").rate, limiter.config("huggingface").burst) == (10, 4)
    assert (limiter.config("civitai").rate, limiter.config("civitai").burst) == (0.5, 1)


@pytest.mark.parametrize("patch", [{"rate_limit_rps": 0}, {"rate_limit_rps": -1}, {"rate_limit_burst": 0}])
def test_bad_settings_are_named_in_the_error(ws, limiter, patch):
    update_config({"ingest": patch}, ws)
    with pytest.raises(IngestError, match="rate_limit") as err:
        limiter.try_acquire("civitai")
    assert err.value.code == "bad_config"


def test_an_upstream_429_blocks_the_key_for_retry_after(ws, limiter):
    update_config({"ingest": {"rate_limit_rps": 100, "rate_limit_burst": 10}}, ws)
    limiter.block("civitai", 30)
    wait = limiter.try_acquire("civitai")
    assert 29 < wait <= 30
    status = limiter.status("civitai")
    assert status["tokens"] == 0 and 29 < status["retry_after"] <= 30
    assert limiter.try_acquire("civitai", now=time.time() + 31) == 0.0
    limiter.block("civitai", 60)
    limiter.block("civitai", 5)  # a shorter pause never shortens a longer one
    assert 55 < limiter.try_acquire("civitai", now=time.time() + 1) <= 59


TAKE = """
import sys, time
from comfyvn.config import workspace
from comfyvn.ingest.ratelimit import RateLimiter
from comfyvn.store import open_store
ws = workspace()
lim = RateLimiter(open_store(ws), ws)
while time.time() < float(sys.argv[1]):
    time.sleep(0.001)
got = sum(1 for _ in range(int(sys.argv[2])) if lim.try_acquire("civitai") == 0.0)
print(got)
"""


def test_processes_share_one_bucket(ws, subprocess_env, limiter):
    update_config({"ingest": {"rate_limit_rps": 0.001, "rate_limit_burst": 6}}, ws)
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", TAKE, str(start), "5"], env=subprocess_env,
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(o.strip()) for o in outs) == 6  # 15 attempts in 3 processes, exactly the burst granted
    assert limiter.try_acquire("civitai") > 100  # and this process sees the same empty bucket
