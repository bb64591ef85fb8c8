#!/usr/bin/env python
"""Sidecar enforcer CLI (a thin wrapper over :mod:`comfyvn.registry.rebuild`).

    python tools/assets_enforcer.py --dry-run --json > sidecar_report.json
    python tools/assets_enforcer.py --fill-metadata --overwrite

Flags: --dry-run, --fill-metadata, --overwrite, --json, --project NAME, --workspace DIR, --quick.
Exit status: 0 when no problem remains, 1 when some do, 2 on bad usage or a malformed config.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from comfyvn.registry.rebuild import main
except ImportError:  # run from a checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from comfyvn.registry.rebuild import main

if __name__ == "__main__":
    raise SystemExit(main(prog="tools/assets_enforcer.py"))
