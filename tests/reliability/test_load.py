"""The load harness at its CI setting: 8 API clients and 4 WebSocket subscribers for 20 s (loopback).

No speed is asserted here (figures go to bench/results/reliability_load.json and
docs/RELIABILITY.md); what must hold under load: no failed request, no event missing on any
subscriber.  The long run is ``python tools/reliability/load_harness.py --long``.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_sustained_load_no_error_no_lost_event(tmp_path):
    from load_harness import run
    from relkit import write_results

    figures = run(tmp_path, float(os.environ.get("COMFYVN_LOAD_SECONDS", "20")), clients=8, subscribers=4,
                  seed=7, verbose=False)
    write_results("reliability_load", figures)
    assert figures["requests"] > 0
    assert figures["errors"] == 0, figures["error_samples"]
    assert figures["ws_errors"] == []
    assert figures["ws_events_sent"] > 0
    assert figures["ws_events_missing"] == 0
    assert figures["ws_events_received"] == figures["ws_events_sent"] * 4
    assert figures["rss_mb"]["samples"] > 0
