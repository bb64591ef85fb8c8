"""Shared settings for the property-based (hypothesis) suites.

``COMFYVN_FUZZ_SCALE`` multiplies every example budget (CI: 1; the long run in
docs/RELIABILITY.md uses 20).  Each test counts the cases it really ran so the session can
report "fuzz cases tried" (written to ``bench/results/reliability_fuzz.json``).
"""

from __future__ import annotations

import collections
import os

from hypothesis import HealthCheck, settings

SCALE = max(1, int(os.environ.get("COMFYVN_FUZZ_SCALE", "1")))
CASES: collections.Counter[str] = collections.Counter()


def fuzz_settings(examples: int, **extra) -> settings:
    """Bounded hypothesis settings: ``examples * SCALE`` cases, no deadline (2 slow cores)."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
                    database=None, **extra)


def count(name: str, n: int = 1) -> None:
    CASES[name] += n
