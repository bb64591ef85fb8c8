"""Run every benchmark in bench/ (``--quick`` for the CI smoke settings) and print a summary.

Each ``bench_*.py`` writes ``bench/results/<name>.json``; the figures in docs/BENCHMARKS.md come
from full (non-quick) runs on this machine, as ratios against baselines measured in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        start = time.monotonic()
        print(f"== {script.name} {' '.join(argv)}", flush=True)
        rc = subprocess.call([sys.executable, str(script), *argv], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc} in {time.monotonic() - start:.1f}s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print("benchmarks failed: " + ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
