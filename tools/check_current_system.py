#!/usr/bin/env python
"""Check that a running comfyvn server, the shipped config and the docs are wired together.

    python tools/check_current_system.py --profile p7_asset_ingest_cache --base "$BASE" --token "$JUPYTER_TOKEN"
    python tools/check_current_system.py --profile hook_bus --base URL --token T --json

The token comes from ``--token`` or ``JUPYTER_TOKEN`` (``dev.sh run`` and ``comfyvn-workbench``
print both exports once the server answers).  Exit status 0 when every check
passes, 1 when one fails (2 for a usage error).  See :mod:`comfyvn.syscheck` for the checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from comfyvn.syscheck import PROFILES, format_report, run_profile

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, choices=sorted(PROFILES),
                        help="; ".join(f"{k}: {v['description']}" for k, v in PROFILES.items()))
    parser.add_argument("--base", required=True, help="the Jupyter server's URL, e.g. http://127.0.0.1:8888/")
    parser.add_argument("--token", default=None, help="Jupyter token (default: $JUPYTER_TOKEN)")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs",
                        help="folder of Markdown docs that must name every route and hook (default: %(default)s)")
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="shipped config file(s) whose flag defaults are checked "
                             "(the package's shipped defaults are always checked)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per request (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not args.base.startswith(("http://", "https://")):
        parser.error(f"--base must be an http:// or https:// URL, got {args.base!r}")
    token = args.token if args.token is not None else os.environ.get("JUPYTER_TOKEN")
    config_files = args.config or []
    report = run_profile(args.profile, args.base, token, docs_dir=args.docs, config_files=config_files,
                         timeout=args.timeout)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
