"""The credits and notices file a release ships, rendered from a :func:`~.check.check_project` result.

Each asset with its title, creator, source URL, licence, verdict and duties (and the licence
decision a person recorded, with who and when), grouped by licence, followed by the full text of
every licence used (a link where no text ships).  The output is deterministic: it holds no time of
its own and sorts everything, so the same registry gives the same bytes, fit to commit and diff.
"""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path
from typing import Any

from ..fsutil import atomic_write_bytes
from . import catalogue as cat

MANIFEST_FORMATS = ("md", "json", "csv", "html")
MEDIA_TYPES = {"md": "text/markdown; charset=utf-8", "json": "application/json", "csv": "text/csv; charset=utf-8",
               "html": "text/html; charset=utf-8"}
VERDICT_LABELS = {"allowed": "allowed", "allowed_with_duties": "allowed with duties", "blocked": "blocked",
                  "unknown": "unknown"}
NO_LICENCE = "(none)"
PROVIDER_TERMS = "(provider terms)"


def _group_key(asset: dict) -> str:
    if asset["license"]:
        return asset["license"]
    return PROVIDER_TERMS if asset.get("terms_source") in ("provider", "licence-file", "user", "override") \
        and asset.get("commercial_use") is not None else NO_LICENCE


def _group_name(key: str) -> str:
    if key == NO_LICENCE:
        return "No licence"
    if key == PROVIDER_TERMS:
        return "Terms stated by the provider (no licence id)"
    return cat.licence_name(key) or key


def manifest_data(result: dict) -> dict[str, Any]:
    """The manifest as plain data: groups of assets by licence, and the licences used."""
    groups: dict[str, list[dict]] = {}
    for asset in result["assets"]:
        groups.setdefault(_group_key(asset), []).append(asset)
    order = sorted(k for k in groups if k not in (PROVIDER_TERMS, NO_LICENCE)) + [
        k for k in (PROVIDER_TERMS, NO_LICENCE) if k in groups]
    used = sorted({lic for a in result["assets"] for lic in a["licences"]})
    licences = []
    for lid in used:
        info = cat.licence_info(lid)
        licences.append({"id": lid, "name": cat.licence_name(lid), "url": info.url if info else None,
                         "text": cat.licence_text(lid)})
    return {
        "project": result["project"], "use": result["use"], "profile": result["profile"], "counts": result["counts"],
        "groups": [{"license": None if k in (PROVIDER_TERMS, NO_LICENCE) else k, "name": _group_name(k),
                    "assets": [_entry(a) for a in sorted(groups[k], key=lambda a: (a["title"].lower(), a["path"],
                                                                                    a["uid"]))]}
                   for k in order],
        "licences": licences,
    }


def _entry(a: dict) -> dict[str, Any]:
    own_credit = f"credit: {a['credit_line']}" if a["credit_line"] else None  # shown as the credit line itself
    name = a["license_name"] or ("none named; terms stated by the provider" if _group_key(a) == PROVIDER_TERMS
                                 else "none")
    return {"uid": a["uid"], "path": a["path"], "title": a["title"], "creator": a["creator"],
            "source_url": a["source_url"], "license": a["license"], "license_name": name,
            "verdict": a["verdict"], "credit_line": a["credit_line"],
            "duties": _unique(d["text"] for d in a["duties"] if d["text"] != own_credit),
            "reasons": _unique(r["text"] for r in a["reasons"]), "override": a["override"]}


def _unique(texts) -> list[str]:
    return list(dict.fromkeys(texts))


def _override_text(o: dict | None) -> str | None:
    if not o:
        return None
    what = o["license"] or ""
    if o["terms"]:
        terms = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(o["terms"].items()))
        what = f"{what} ({terms})" if what else terms
    scope = "; covers its sources" if o["covers_sources"] else ""
    return f'{what}{scope} — "{o["note"]}" — recorded by {o["decided_by"]} on {o["decided_at_utc"]}'


def render_manifest(result: dict, fmt: str = "md") -> str:
    """The manifest of a check result in ``fmt`` (md, json, csv or html)."""
    if fmt not in MANIFEST_FORMATS:
        raise ValueError(f"format must be one of {', '.join(MANIFEST_FORMATS)}, got {fmt!r}")
    data = manifest_data(result)
    return {"md": _markdown, "json": _json, "csv": _csv, "html": _html}[fmt](data)


def write_manifest(path: str | Path, text: str) -> Path:
    """Write a rendered manifest atomically (nothing half-written under its name)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a folder; give a file name such as CREDITS.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


def _summary(data: dict) -> str:
    c = data["counts"]
    return f"{sum(c.values())} assets: " + ", ".join(f"{VERDICT_LABELS[k]} {c[k]}" for k in VERDICT_LABELS)


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _markdown(data: dict) -> str:
    p = data["profile"]
    out = [f"# Licences and credits: project {data['project']}", "",
           f"Use: **{data['use']}** ({p['description']}).", f"{_summary(data)}.", ""]
    for group in data["groups"]:
        head = group["name"] + (f" (`{group['license']}`)" if group["license"] else "")
        out += [f"## {head}", ""]
        for a in group["assets"]:
            out += [f"### {a['title']}", "", f"- File: `{a['path']}` (uid `{a['uid']}`)"]
            if a["creator"]:
                out.append(f"- Creator: {a['creator']}")
            if a["source_url"]:
                out.append(f"- Source: <{a['source_url']}>")
            out.append(f"- Licence: {a['license_name']}")
            out.append(f"- Verdict: **{VERDICT_LABELS[a['verdict']]}**")
            if a["credit_line"]:
                out.append(f"- Credit: {a['credit_line']}")
            if (decision := _override_text(a["override"])) is not None:
                out.append(f"- Licence decision: {decision}")
            for title, items in (("Duties", a["duties"]), ("Why", a["reasons"])):
                if items:
                    out.append(f"- {title}:")
                    out += [f"  - {item}" for item in items]
            out.append("")
    out += ["## Licence texts", ""]
    for lic in data["licences"]:
        out += [f"### {lic['name']} (`{lic['id']}`)", ""]
        if lic["url"]:
            out += [f"<{lic['url']}>", ""]
        if lic["text"]:
            out += ["```text", lic["text"].rstrip("\n"), "```", ""]
        elif not lic["url"]:
            out += ["No text or link known for this licence: add its text to the release by hand.", ""]
    return "\n".join(out).rstrip("\n") + "\n"


CSV_COLUMNS = ("license", "license_name", "title", "creator", "source_url", "path", "uid", "verdict", "credit_line",
               "duties", "reasons", "override")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a title typed as ``=HYPERLINK(...)`` is not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv(data: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in data["groups"]:
        for a in group["assets"]:
            row = {**a, "duties": "; ".join(a["duties"]), "reasons": "; ".join(a["reasons"]),
                   "override": _override_text(a["override"]) or ""}
            writer.writerow([_cell(row.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()


_CSS = ("body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2937}"
        "pre{white-space:pre-wrap;background:#f9fafb;border:1px solid #e5e7eb;padding:1rem;font-size:12px}"
        ".allowed{color:#065f46}.allowed_with_duties{color:#92400e}.blocked,.unknown{color:#991b1b}"
        "dt{font-weight:600}dd{margin:0 0 .4rem 1rem}")


def _html(data: dict) -> str:
    e = html.escape
    p = data["profile"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>Licences and credits: {e(data['project'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>Licences and credits: project {e(data['project'])}</h1>",
           f"<p>Use: <b>{e(data['use'])}</b> ({e(p['description'])}). {e(_summary(data))}.</p>"]
    for group in data["groups"]:
        head = e(group["name"]) + (f" (<code>{e(group['license'])}</code>)" if group["license"] else "")
        out.append(f"<h2>{head}</h2>")
        for a in group["assets"]:
            rows = [("File", f"<code>{e(a['path'])}</code> (uid <code>{e(a['uid'])}</code>)")]
            if a["creator"]:
                rows.append(("Creator", e(a["creator"])))
            if a["source_url"]:
                url = a["source_url"]
                link = f'<a href="{e(url)}">{e(url)}</a>' if url.startswith(("https://", "http://")) else e(url)
                rows.append(("Source", link))
            rows.append(("Licence", e(a["license_name"])))
            rows.append(("Verdict", f'<span class="{e(a["verdict"])}">{e(VERDICT_LABELS[a["verdict"]])}</span>'))
            if a["credit_line"]:
                rows.append(("Credit", e(a["credit_line"])))
            if (decision := _override_text(a["override"])) is not None:
                rows.append(("Licence decision", e(decision)))
            for title, items in (("Duties", a["duties"]), ("Why", a["reasons"])):
                if items:
                    rows.append((title, "<ul>" + "".join(f"<li>{e(i)}</li>" for i in items) + "</ul>"))
            out.append(f"<h3>{e(a['title'])}</h3><dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
                       + "</dl>")
    out.append("<h2>Licence texts</h2>")
    for lic in data["licences"]:
        out.append(f"<h3>{e(lic['name'])} (<code>{e(lic['id'])}</code>)</h3>")
        if lic["url"]:
            out.append(f'<p><a href="{e(lic["url"])}">{e(lic["url"])}</a></p>')
        if lic["text"]:
            out.append(f"<pre>{e(lic['text'])}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
