"""The ``licence_check`` runbook's one call: check a project, optionally write its manifest."""

from __future__ import annotations

from pathlib import Path

from ..config import Workspace
from ..runbook_reports import Report, Verdict, plural
from .check import VERDICTS, check_project
from .cli import open_project
from .manifest import render_manifest, write_manifest


def licence_check(ws: Workspace, *, project_id: str | None = None, use: str | None = None,
                  manifest_format: str = "md", manifest_path: str | None = None) -> Report:
    """Verdict OK when nothing is blocked or unknown; with ``manifest_path`` (relative to the
    workspace, or absolute) the manifest is written in ``manifest_format`` whatever the verdict."""
    import pandas as pd

    registry = open_project(str(ws.root), project_id)
    result = check_project(registry, use)
    rows = [{"verdict": a["verdict"], "path": a["path"], "title": a["title"], "licence": a["license"] or "",
             "why": "; ".join(dict.fromkeys(r["text"] for r in a["reasons"])),
             "duties": "; ".join(dict.fromkeys(d["text"] for d in a["duties"])),
             "decision": (a["override"] or {}).get("note", "")} for a in result["assets"]]
    order = {v: i for i, v in enumerate(("blocked", "unknown", "allowed_with_duties", "allowed"))}
    frame = pd.DataFrame(sorted(rows, key=lambda r: (order[r["verdict"]], r["path"])),
                         columns=["verdict", "path", "title", "licence", "why", "duties", "decision"])
    written = None
    if manifest_path:
        target = Path(manifest_path).expanduser()
        target = target if target.is_absolute() else ws.root / target
        written = write_manifest(target, render_manifest(result, manifest_format))
    c = result["counts"]
    assets = plural(sum(c.values()), "asset")
    if result["ok"]:
        verdict = Verdict(True, f"{assets} of project {registry.project_id!r} may ship for use {result['use']!r} "
                                f"({c['allowed_with_duties']} with duties)")
    else:
        problems = [f"{a['verdict']}: {a['path']}: " + "; ".join(dict.fromkeys(r["text"] for r in a["reasons"]))
                    for a in result["assets"] if a["verdict"] in ("blocked", "unknown")]
        verdict = Verdict(False, f"{c['blocked']} blocked and {c['unknown']} unknown of {assets} for use "
                                 f"{result['use']!r}", problems)
    counts = {v.replace("_", " "): c[v] for v in VERDICTS}
    return Report(verdict, {"assets": frame}, {"result": result, "counts": counts, "manifest": written,
                                               "bad": ["blocked", "unknown"]})
