"""``comfyvn-licences``: the licence check as a release gate, the manifest, and licence decisions.

    comfyvn-licences check --project P --use commercial [--json]
    comfyvn-licences manifest --project P --format md|json|csv|html [--output CREDITS.md]
    comfyvn-licences override set UID --license cc-by-4.0 --note "bought a licence, invoice 123"
    comfyvn-licences override clear UID --note "licence expired"
    comfyvn-licences override list [UID]

Exit status: 0 when nothing is blocked or unknown (check) or the command did its work; 1 when
the check finds anything blocked or unknown; 2 for bad usage, a folder that is not a workspace,
an unknown project or use profile, or a bad config.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ..config import (
    ConfigError,
    NotAWorkspaceError,
    Workspace,
    default_project,
    existing_workspace,
)
from ..errors import InvalidInput
from ..studio.core.asset_registry import AssetNotFoundError, AssetRegistry, check_project_id
from .check import VERDICTS, check_project
from .manifest import MANIFEST_FORMATS, render_manifest, write_manifest
from .overrides import OverrideNotFoundError, clear_override, override_history, set_override

HINT = "pass --workspace DIR or set COMFYVN_HOME"
MARKS = {"allowed": "ok     ", "allowed_with_duties": "duties ", "blocked": "BLOCKED", "unknown": "UNKNOWN"}


class UsageError(InvalidInput, ValueError):
    """Bad usage the person can fix (exit status 2)."""


def open_project(workspace: str | None, project: str | None, *, recover: bool = False) -> AssetRegistry:
    """The registry of an existing project of an existing workspace (never creates either)."""
    ws: Workspace = existing_workspace(workspace, hint=HINT)
    name = check_project_id(project or default_project(ws))
    env_root = os.environ.get("COMFYVN_ASSETS_ROOT")  # the registry's own override of the assets folder
    root = Path(env_root).expanduser().resolve() if env_root else ws.assets_root
    if not (root / name).is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise UsageError(f"no project {name!r} in {ws.root} (projects: {', '.join(known) or 'none'})")
    return AssetRegistry(name, ws=ws, recover=recover, make_thumbnails=False)


def print_check(result: dict, out: TextIO) -> None:
    c = result["counts"]
    print(f"project {result['project']} · use {result['use']} · {sum(c.values())} assets: "
          + ", ".join(f"{v.replace('_', ' ')} {c[v]}" for v in VERDICTS), file=out)
    for a in result["assets"]:
        lic = a["license"] or ("provider terms" if a["commercial_use"] is not None else "no licence")
        print(f"  [{MARKS[a['verdict']]}] {a['path']}  ({lic})", file=out)
        for r in a["reasons"]:
            print(f"      ! {r['text']}  [source: {r['source']}]", file=out)
        for d in a["duties"]:
            print(f"      - {d['text']}", file=out)
        if a["override"]:
            o = a["override"]
            print(f"      * decision by {o['decided_by']} on {o['decided_at_utc']}: {o['note']}", file=out)
    print("OK: nothing blocked or unknown" if result["ok"] else
          f"NOT OK: {c['blocked']} blocked, {c['unknown']} unknown", file=out)


def build_parser(prog: str | None = "comfyvn-licences") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog="Exit status: 0 ok, 1 something blocked or unknown (check), 2 bad usage.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", help="workspace folder (default: $COMFYVN_HOME, else the current folder)")
    common.add_argument("--project", help="registry project (default: registry.default_project)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("check", parents=[common], help="classify every asset for a use profile")
    p.add_argument("--use", help="use profile (default: licences.default_use; shipped: commercial, "
                                 "free-release, internal, rent)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p = sub.add_parser("manifest", parents=[common], help="write the credits and notices file")
    p.add_argument("--use", help="use profile (default: licences.default_use)")
    p.add_argument("--format", choices=MANIFEST_FORMATS, default="md")
    p.add_argument("--output", type=Path, help="file to write (default: standard output)")
    p = sub.add_parser("override", help="record, withdraw or list licence decisions")
    action = p.add_subparsers(dest="action", required=True)
    s = action.add_parser("set", parents=[common], help="record a licence decision for an asset")
    s.add_argument("uid")
    s.add_argument("--license", help="licence id (e.g. cc-by-4.0, or your own id for a bought licence)")
    s.add_argument("--commercial-use", choices=["none", "image", "rent-civit", "rent", "sell"])
    s.add_argument("--credit-required", choices=["true", "false"])
    s.add_argument("--derivatives-allowed", choices=["true", "false"])
    s.add_argument("--covers-sources", action="store_true",
                   help="the decision also covers what the asset derives from (e.g. a licence for the base model)")
    s.add_argument("--note", required=True, help="why: e.g. 'bought a commercial licence, invoice 123'")
    s.add_argument("--by", help="who decided (default: the login name)")
    c = action.add_parser("clear", parents=[common], help="withdraw an asset's licence decision")
    c.add_argument("uid")
    c.add_argument("--note", required=True, help="why it is withdrawn")
    c.add_argument("--by", help="who decided (default: the login name)")
    lst = action.add_parser("list", parents=[common], help="the paper trail (of one asset, or the project)")
    lst.add_argument("uid", nargs="?")
    return parser


def _flag(value: str | None) -> bool | None:
    return None if value is None else value == "true"


def run(args: argparse.Namespace, out: TextIO) -> int:
    read_only = args.cmd in ("check", "manifest") or getattr(args, "action", None) == "list"
    registry = open_project(args.workspace, args.project, recover=not read_only)
    if args.cmd == "check":
        result = check_project(registry, args.use)
        if args.json:
            print(json.dumps(result, indent=2, ensure_ascii=False, sort_keys=True), file=out)
        else:
            print_check(result, out)
        return 0 if result["ok"] else 1
    if args.cmd == "manifest":
        text = render_manifest(check_project(registry, args.use), args.format)
        if args.output is None:
            out.write(text)
        else:
            print(f"manifest written to {write_manifest(args.output, text)}", file=sys.stderr)
        return 0
    who = getattr(args, "by", None) or getpass.getuser()
    record: Any
    if args.action == "set":
        terms = {"commercial_use": args.commercial_use, "credit_required": _flag(args.credit_required),
                 "derivatives_allowed": _flag(args.derivatives_allowed)}
        record = set_override(registry, args.uid, license=args.license, terms=terms, note=args.note, decided_by=who,
                              covers_sources=args.covers_sources)
    elif args.action == "clear":
        record = clear_override(registry, args.uid, note=args.note, decided_by=who)
    else:
        record = override_history(registry.db, registry.project_id, args.uid)
    print(json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True), file=out)
    return 0


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, out or sys.stdout)
    except (NotAWorkspaceError, ConfigError, AssetNotFoundError, OverrideNotFoundError, ValueError) as exc:
        print(f"comfyvn-licences: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
