"""``comfyvn-store``: move a workspace's database between SQLite and PostgreSQL.

    comfyvn-store migrate --to postgresql://comfyvn@db.studio/vn      # this workspace's store -> PostgreSQL
    comfyvn-store migrate --from postgresql://comfyvn@db.studio/vn --to sqlite:///backups/vn.sqlite3
    comfyvn-store migrate --to sqlite:///backups/vn.sqlite3 --verify  # compare only, write nothing

``--from`` defaults to the workspace's store (``store.url`` / ``COMFYVN_STORE_URL``, else its
SQLite file).  Each table is copied in schema order, in batches; a re-run copies only what the
target lacks, and a target holding different rows is refused unless ``--replace``.  The table of
row counts and checksums of both sides is printed every time.

Exit status: 0 when both sides hold the same rows at the end; 1 when they differ (``--verify``)
or the target holds different data (nothing written); 2 for bad usage or a store that cannot
be opened.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from ..config import ConfigError, NotAWorkspaceError, existing_workspace, store_url
from ..errors import InvalidInput
from .errors import StoreUnavailable
from .transfer import DEFAULT_BATCH, TransferConflict, TransferError, format_report, transfer

HINT = "pass --workspace DIR or set COMFYVN_HOME, or give --from"


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="comfyvn-store", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="copy a workspace's database into another store (idempotent, verified)")
    mig.add_argument("--to", required=True, metavar="URL", help="target store: postgresql://... or sqlite:///file")
    mig.add_argument("--from", dest="source", metavar="URL", default=None,
                     help="source store (default: the workspace's store)")
    mig.add_argument("--workspace", default=None, help="workspace folder (default: $COMFYVN_HOME)")
    mig.add_argument("--verify", action="store_true",
                     help="copy nothing: compare both sides' row counts and checksums (exit 1 when they differ)")
    mig.add_argument("--replace", action="store_true",
                     help="a target holding different rows is emptied (its copied tables) and copied again")
    mig.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per batch (default: %(default)s)")
    mig.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if args.verify and args.replace:
        parser.error("--verify writes nothing; it cannot be combined with --replace")
    try:
        source = args.source or store_url(existing_workspace(args.workspace, hint=HINT))
        report = transfer(source, args.to, copy=not args.verify, replace=args.replace, batch=args.batch,
                          progress=lambda msg: print(msg, file=sys.stderr))
    except TransferConflict as exc:
        print(f"comfyvn-store: {exc}", file=sys.stderr)
        return 1
    except (TransferError, InvalidInput, NotAWorkspaceError, ConfigError, StoreUnavailable) as exc:
        print(f"comfyvn-store: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report), file=out)
    return 0 if report.identical else 1


if __name__ == "__main__":
    sys.exit(main())
