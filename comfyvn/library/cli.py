"""``comfyvn-library``: scan library roots in place, identify files, report duplicates.

    comfyvn-library scan [ROOT ...] [--project P] [--identify] [--autov3 background|eager|off] [--json]
    comfyvn-library identify [--project P] [--json]
    comfyvn-library duplicates [--project P] [--json]
    comfyvn-library status [--project P] [--json]

Exit status: 0 done, 1 done with files that could not be read, 2 bad usage or configuration
(a folder that is not a workspace is refused, never created).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config import ConfigError, NotAWorkspaceError, existing_workspace
from ..studio.core.asset_registry import AssetRegistry
from .duplicates import duplicate_report
from .identify import identify_unidentified, link_huggingface
from .scan import AUTOV3_MODES, ScanBusyError, library_status, scan_library


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "comfyvn-library", description="Register model and asset folders in "
                                "place (library.roots in config/comfyvn.json), identify them, report duplicates.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=None, help="registry project (default: registry.default_project)")
    common.add_argument("--workspace", default=None, help="workspace folder (default: $COMFYVN_HOME or the current one)")
    common.add_argument("--json", action="store_true", help="print the report as JSON")
    sub = p.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", parents=[common], help="walk roots: register new files, update changed ones, "
                          "mark vanished ones")
    scan.add_argument("roots", nargs="*", metavar="ROOT", help="root names or paths (default: every root)")
    scan.add_argument("--identify", action="store_true", help="then ask Civitai about unidentified models in bulk")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar")
    scan.add_argument("--autov3", choices=AUTOV3_MODES, default="background",
                      help="AutoV3 of .safetensors files (a second SHA-256 of the file): background (default: "
                      "after every file is registered and findable by its other hashes), eager (in the same "
                      "pass), off (left queued for a later scan)")
    sub.add_parser("identify", parents=[common], help="ask Civitai (100 hashes per call) and link Hugging Face repos")
    sub.add_parser("duplicates", parents=[common], help="byte-identical files across roots and the registry")
    sub.add_parser("status", parents=[common], help="per root: files, bytes, identified, missing")
    return p


class _Bars:
    """Two tqdm bars on stderr: files and bytes (rate and ETA) of the hashing phase, then of the
    AutoV3 phase."""

    _DESC = {"hash": ("files", "bytes"), "autov3": ("AutoV3 files", "AutoV3 bytes")}

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.files: Any = None
        self.bytes: Any = None
        self.phase: str | None = None

    def __call__(self, state: dict) -> None:
        phase = state.get("phase")
        if not self.enabled or phase not in self._DESC:
            if phase in ("register", "done"):
                self.close()
            return
        if self.phase != phase:
            self.close()
        if self.files is None:
            from tqdm import tqdm

            self.phase = phase
            files, nbytes = self._DESC[phase]
            self.files = tqdm(total=state["files_total"], unit="file", desc=files, position=0, file=sys.stderr)
            self.bytes = tqdm(total=state["bytes_total"], unit="B", unit_scale=True, unit_divisor=1024, desc=nbytes,
                              position=1, file=sys.stderr)
        self.files.n, self.bytes.n = state["files_done"], min(state["bytes_done"], state["bytes_total"])
        self.files.refresh()
        self.bytes.refresh()

    def close(self) -> None:
        for bar in (self.files, self.bytes):
            if bar is not None:
                bar.close()
        self.files = self.bytes = None
        self.phase = None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        ws = existing_workspace(args.workspace)
        registry = AssetRegistry(args.project, ws=ws)
        if args.command == "scan":
            bars = _Bars(not args.json and not args.no_progress and sys.stderr.isatty())
            try:
                report = scan_library(args.roots or None, ws=ws, registry=registry, identify=args.identify,
                                      progress=bars, autov3=args.autov3)
            finally:
                bars.close()
            out: dict = report.to_dict()
            status = 1 if report.errors else 0
            text = _scan_text(report)
        elif args.command == "identify":
            ident = identify_unidentified(registry)
            out = {**ident.to_dict(), "huggingface": link_huggingface(registry)}
            status = 0
            text = (f"asked Civitai about {ident.asked} files in {ident.calls} calls: {len(ident.matched)} identified, "
                    f"{ident.not_found} unknown, {ident.skipped_negative} skipped (asked recently); "
                    f"{len(out['huggingface'])} linked to Hugging Face")
        elif args.command == "duplicates":
            out = duplicate_report(registry)
            status = 0
            lines = [f"{len(out['groups'])} contents held by {out['files']} files; "
                     f"{_human(out['reclaimable_bytes'])} reclaimable (nothing was deleted)"]
            for g in out["groups"]:
                lines.append(f"  {g['sha256'][:12]}  {_human(g['size'])} x {g['copies']}")
                lines.extend(f"    {p['path']}" for p in g["paths"])
            text = "\n".join(lines)
        else:
            out = library_status(registry)
            status = 0
            text = "\n".join(f"{r['name']:<16} {r['files']:>8} files {_human(r['bytes']):>12}  identified "
                             f"{r['identified']}  unidentified {r['unidentified']}  missing {r['missing']}"
                             f"{'' if r['available'] else '  (not available)'}" for r in out["roots"]) or \
                "no library roots configured (library.roots in config/comfyvn.json)"
    except (ConfigError, ValueError, NotAWorkspaceError, ScanBusyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, ensure_ascii=False, default=str) if args.json else text)
    return status


def _scan_text(report) -> str:
    s = report.summary()
    lines = [f"{s['files']} files ({_human(s['bytes'])}) in {', '.join(report.roots)}: {s['unchanged']} unchanged, "
             f"{s['registered']} registered, {s['changed']} changed, {s['moved']} moved, {s['missing']} missing; "
             f"read {s['hashed_files']} files ({_human(s['hashed_bytes'])}) in {s['seconds']:.1f} s"]
    lines += [f"  moved: {m['from']} -> {m['to']}" for m in report.moved]
    lines += [f"  missing: {m['path']}" for m in report.missing]
    lines += [f"  error: {e['path']}: {e['error']}" for e in report.errors]
    v3 = report.autov3
    if v3.get("mode") == "off" or v3.get("pending"):
        lines.append(f"  AutoV3: {v3.get('pending', 0)} contents still to hash (scan with --autov3 background)")
    elif v3.get("files"):
        lines.append(f"  AutoV3: {v3['files']} files ({_human(v3['bytes'])}) in {v3['seconds']:.1f} s, after registration")
    lines += [f"  AutoV3 error: {e['path']}: {e['error']}" for e in v3.get("errors", [])]
    if report.identify:
        i = report.identify
        lines.append(f"  identify: {len(i['matched'])} of {i['asked']} identified in {i['calls']} calls")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m comfyvn.library.cli"))
