"""Fixtures of the reliability suites (see docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
KIT = REPO_ROOT / "tools" / "reliability"
if str(KIT) not in sys.path:
    sys.path.insert(0, str(KIT))


def pytest_sessionfinish(session, exitstatus) -> None:
    """Write how many fuzz cases each property test ran (for the figures in docs/RELIABILITY.md)."""
    from .fuzzkit import CASES

    if not CASES:
        return
    out = REPO_ROOT / "bench" / "results" / "reliability_fuzz.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous.update(dict(CASES))
    out.write_text(json.dumps(previous, indent=2, sort_keys=True) + "\n")
