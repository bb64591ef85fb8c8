"""The crash harness at its CI setting: a real server SIGKILLed 8 times under a mixed workload.

The long run (50 kills, figures in docs/RELIABILITY.md) is
``python tools/reliability/crash_harness.py --long``.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("COMFYVN_CRASH_KILLS", "8"))


@pytest.mark.timeout(600)
def test_sigkill_under_mixed_workload_loses_nothing(tmp_path):
    from crash_harness import Harness
    from relkit import write_results

    figures = Harness(tmp_path, KILLS, seed=int(os.environ.get("COMFYVN_RELIABILITY_SEED", "7")),
                      verbose=False).run()
    write_results("reliability_crash", figures)
    assert figures["kills"] == KILLS
    assert figures["problems"] == [], figures["problems"]
    assert figures["jobs_lost"] == 0
    assert figures["jobs_acknowledged"] > KILLS  # the workload really ran between kills
    assert figures["http_5xx"] == 0, figures["http_5xx_samples"]
    assert figures["database_locked_in_logs"] == 0
    hooks = figures["webhook"]
    assert hooks["expected"] > 0 and hooks["missing"] == 0, hooks  # at least once: every committed event
    # every complete delivery verifies; a body cut short by a SIGKILL is counted apart (cut_deliveries)
    assert hooks["bad_signatures"] == 0, hooks
    assert figures["ok"]
