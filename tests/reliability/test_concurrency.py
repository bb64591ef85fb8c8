"""The concurrency harness at its CI setting: server, two kernels and the enforcer CLI for 30 s.

The long run (5 minutes) is ``python tools/reliability/concurrency_harness.py --long``.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("COMFYVN_CONCURRENCY_SECONDS", "30"))


@pytest.mark.timeout(900)
def test_four_writers_stage_each_digest_once_and_lose_no_tag(tmp_path):
    from concurrency_harness import run
    from relkit import write_results

    figures = run(tmp_path, SECONDS, seed=int(os.environ.get("COMFYVN_RELIABILITY_SEED", "7")), verbose=False)
    write_results("reliability_concurrency", figures)
    assert figures["problems"] == [], figures["problems"]
    assert figures["database_locked_reaching_users"] == 0, figures["samples"]
    assert figures["database_locked_in_server_log"] == 0
    assert figures["unexpected_errors"] == 0, figures["samples"]
    # the run really raced: every writer staged and tagged, the enforcer ran repeatedly
    counts = figures["writer_counts"]
    assert counts["k1"].get("enqueue_staged", 0) > 0 and counts["k2"].get("enqueue_staged", 0) > 0
    assert counts["server"].get("enqueue_201", 0) > 0
    assert figures["processes"]["enforcer_runs"] >= 2
    assert figures["tag_updates_acknowledged"] > 0
    assert figures["ok"]
