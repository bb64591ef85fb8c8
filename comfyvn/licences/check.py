"""The licence check: may this project's assets ship under a use profile, and what do we owe?

Every asset gets a verdict with its reasons, each naming where the decision came from:

* **allowed**: nothing stands in the way and nothing is owed;
* **allowed_with_duties**: allowed if the release credits, shares alike, includes a notice, ...;
* **blocked**: the terms forbid the use (non-commercial, rent-only, no derivatives where the asset
  is a derivative), its own or inherited;
* **unknown**: no licence, terms that could not be read, or a source that cannot be followed.

Decision sources: ``provider`` (a provider's permission fields, e.g. Civitai's), ``licence-file``,
``user`` (a licence a person set in the registry), ``base-model`` (the base model's licence),
``override`` (a licence decision with a paper trail, :mod:`.overrides`) and ``provenance`` (the
chain itself).  An asset derived from another (``trained_on``, ``merged_from``: a derivative;
``generated_with``: an output; its ``base_model``) inherits the restrictions of its sources, all
the way down the chain (cycles and dangling links are reported, never followed forever).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from .. import rights
from ..studio.core.asset_registry import AssetRegistry
from . import catalogue as cat
from .overrides import current_overrides, effective_terms
from .profiles import UseProfile, use_profile

ALLOWED, DUTIES, BLOCKED, UNKNOWN = "allowed", "allowed_with_duties", "blocked", "unknown"
VERDICTS = (ALLOWED, DUTIES, BLOCKED, UNKNOWN)
# provenance links (in the asset's provenance or metadata): key -> how the asset relates to the source
RELATIONS = {"trained_on": "derive", "merged_from": "derive", "generated_with": "output"}
MAX_DEPTH = 32
INF = float("inf")
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".sft")
_UID = re.compile(r"^[0-9a-f]{16}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _worst(verdicts: Iterable[str]) -> str:
    found = set(verdicts)
    for verdict in (BLOCKED, UNKNOWN, DUTIES):
        if verdict in found:
            return verdict
    return ALLOWED


def asset_facts(rec: dict) -> dict[str, Any]:
    """Title, creator and source URL of an asset, as its metadata states them."""
    meta, prov = rec.get("meta") or {}, rec.get("provenance") or {}

    def first(*keys: str) -> str | None:
        for key in keys:
            value = meta.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    url = first("source_url", "url")
    if url is None and isinstance(prov.get("source"), str) and prov["source"].startswith(("https://", "http://")):
        url = prov["source"]
    return {"title": first("title", "name") or PurePosixPath(rec["path"]).name,
            "creator": first("author", "creator", "artist"), "source_url": url}


def credit_line(facts: dict, licence: str | None) -> str:
    parts = [f'"{facts["title"]}"']
    if facts.get("creator"):
        parts.append(f"by {facts['creator']}")
    line = " ".join(parts)
    if facts.get("source_url"):
        line += f" ({facts['source_url']})"
    name = cat.licence_name(licence)
    return line + (f", licensed under {name}" if name else "")


def _links(rec: dict) -> list[tuple[str, str]]:
    """``(relation key, reference)`` of the asset's provenance links, in a stable order."""
    out: list[tuple[str, str]] = []
    for place in (rec.get("provenance") or {}, rec.get("meta") or {}):
        for key in RELATIONS:
            value = place.get(key)
            refs = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            for ref in refs:
                if isinstance(ref, str) and ref.strip() and (key, ref.strip()) not in out:
                    out.append((key, ref.strip()))
    return out


def _is_model(rec: dict) -> bool:
    meta = rec.get("meta") or {}
    return bool(meta.get("model_type")) or rec["path"].lower().endswith(MODEL_SUFFIXES)


class _Checker:
    """Evaluates assets under one profile, remembering each (asset, mode) it has worked out."""

    def __init__(self, records: list[dict], overrides: dict[str, dict], profile: UseProfile) -> None:
        self.by_uid = {r["uid"]: r for r in records}
        self.by_hash = {r["hash"]: r for r in records}
        self.overrides = overrides
        self.profile = profile
        self.memo: dict[tuple[str, str], tuple[list[dict], float]] = {}

    # -- one asset's own rights -------------------------------------------------------------
    def rights_of(self, rec: dict) -> tuple[str | None, dict, dict | None]:
        """``(licence, terms, override)``: an override in force replaces what the registry holds."""
        override = self.overrides.get(rec["uid"])
        if override is not None:  # the base model stays what it is (unless the decision covers the sources)
            terms = {**effective_terms(override),
                     "base_model_license": (rec.get("license_terms") or {}).get("base_model_license")}
            return override["license"], terms, override
        return rec.get("license"), dict(rec.get("license_terms") or {}), None

    def own(self, licence: str | None, terms: dict, *, mode: str, label: str, facts: dict | None,
            known: bool) -> list[dict]:
        """Findings of one set of rights used in ``mode`` (ship, derive or output)."""
        source = terms.get("source") or "user"
        p = self.profile
        if not known:
            return [_f(UNKNOWN, "no-licence", f"{label}: no licence and no terms stated", None)]
        lid = rights.licence_id(licence)
        stated = any(terms.get(k) is not None for k in ("commercial_use", "credit_required", "derivatives_allowed"))
        if lid and lid not in rights.LICENCE_TERMS and not stated:
            return [_f(UNKNOWN, "unreadable-licence", f"{label}: licence {lid!r} is not one comfyvn can read; "
                                                      "record an override with its terms", source, lid)]
        out: list[dict] = []
        need = p.output_commercial_use if mode == "output" else p.commercial_use
        if need is not None:
            level = terms.get("commercial_use")
            have, want = rights.commercial_rank(level), rights.commercial_rank(need)
            if have is None or want is None:  # not stated, or a level no one can read (the profile's is checked)
                out.append(_f(UNKNOWN, "commercial-unstated", f"{label}: commercial use is not stated "
                                                              f"(the {p.name} use needs {need})", source, lid))
            elif have < want:
                what = {"none": "non-commercial", "image": "only its generated images may be sold",
                        "rent-civit": "only on Civitai's generator", "rent": "rent-only (run as a service)"}[str(level)]
                out.append(_f(BLOCKED, "commercial", f"{label}: {what}; the {p.name} use needs {need}", source, lid))
        if mode == "derive":
            allowed = terms.get("derivatives_allowed")
            if allowed is False:
                out.append(_f(BLOCKED, "no-derivatives", f"{label}: no derivatives allowed", source, lid))
            elif allowed is None:
                out.append(_f(UNKNOWN, "derivatives-unstated", f"{label}: derivatives are not stated", source, lid))
        if p.distributes:
            out += self.duties(lid, terms, mode=mode, label=label, facts=facts, source=source)
        return out

    def duties(self, lid: str | None, terms: dict, *, mode: str, label: str, facts: dict | None,
               source: str) -> list[dict]:
        out: list[dict] = []
        info = cat.CATALOGUE.get(lid or "")
        # a licence's attribution clause is about copies of the work; what a model generated owes its
        # creator credit only when the creator's own permissions (Civitai's) or a person's decision say so
        if terms.get("credit_required") is True and (mode != "output" or source in ("provider", "override")):
            line = credit_line(facts, lid) if facts else label
            out.append(_f(DUTIES, cat.CREDIT, f"credit: {line}", source, lid))
        if info is None or mode == "output":
            return out
        name = info.name
        if info.notice:
            out.append(_f(DUTIES, cat.NOTICE, f"{label}: include the {name} text or link with the release",
                          source, lid))
        if info.share_alike:
            out.append(_f(DUTIES, cat.SHARE_ALIKE, f"{label}: adaptations must be shared under {name} (or a "
                                                   "compatible licence)", source, lid))
        if info.use_restrictions:
            out.append(_f(DUTIES, cat.USE_RESTRICTIONS, f"{label}: {name}'s use restrictions travel with the model "
                                                        "and every derivative", source, lid))
        if info.revenue_threshold and self.profile.commercial_use is not None:
            out.append(_f(DUTIES, cat.REVENUE_THRESHOLD, f"{label}: commercial use only under {name}'s annual "
                                                         "revenue threshold", source, lid))
        if mode == "ship" and terms.get("derivatives_allowed") is False:
            out.append(_f(DUTIES, cat.NO_MODIFICATION, f"{label}: ship it unmodified (no derivatives)", source, lid))
        return out

    # -- an asset with its chain ---------------------------------------------------------------
    def evaluate(self, rec: dict, mode: str) -> list[dict]:
        """Findings of ``rec`` used in ``mode``, with everything inherited from its provenance chain."""
        return self._evaluate(rec, mode, ())[0]

    def _evaluate(self, rec: dict, mode: str, trail: tuple[str, ...]) -> tuple[list[dict], float]:
        """``(findings, height)``: height is the longest chain of assets below (inf when a loop or the
        depth limit cut it short).  A remembered result is reused only where it fits in the depth
        left, so every asset's verdict is the same whatever order the project is checked in."""
        key = (rec["uid"], mode)
        if rec["uid"] in trail:
            cycle = " -> ".join([*trail[trail.index(rec["uid"]):], rec["uid"]])
            return [_f(UNKNOWN, "provenance-cycle", f"provenance loops ({cycle}); fix the links", "provenance")], INF
        left = MAX_DEPTH - len(trail)
        if left <= 0:
            return [_f(UNKNOWN, "provenance-too-deep", f"provenance chain longer than {MAX_DEPTH} links",
                       "provenance")], INF
        cached = self.memo.get(key)
        if cached is not None and cached[1] < left:
            return cached
        trail = (*trail, rec["uid"])
        facts = asset_facts(rec)
        licence, terms, override = self.rights_of(rec)
        known = override is not None or rights.licence_known(licence, terms)
        label = "this asset" if len(trail) == 1 else f'"{facts["title"]}" ({rec["uid"]})'
        findings = self.own(licence, terms, mode=mode, label=label, facts=facts, known=known)
        if override is not None:
            for f in findings:
                f["override_id"] = override["id"]
        height = 0.0
        if override is None or not override["covers_sources"]:
            inherited, height = self.inherited(rec, terms, mode, trail)
            findings += inherited
        if height < INF and len(trail) > 1:  # sources only: "ship" is the checked asset itself
            self.memo[key] = (findings, height)
        return findings, height

    def inherited(self, rec: dict, terms: dict, mode: str, trail: tuple[str, ...]) -> tuple[list[dict], float]:
        out: list[dict] = []
        height = 0.0
        base = terms.get("base_model_license")
        if base:
            sub = "output" if mode == "output" or not _is_model(rec) else "derive"
            base_terms = {**rights.LICENCE_TERMS.get(base, {}), "source": "base-model"}
            label = f"base model licence {cat.licence_name(base)}"
            for f in self.own(base, base_terms, mode=sub, label=label, facts=None, known=True):
                out.append({**f, "via": [{"relation": "base_model", "ref": base}]})
        for key, ref in _links(rec):
            sub = "output" if mode == "output" or RELATIONS[key] == "output" else "derive"
            src = self.resolve(ref)
            hop = {"relation": key, "ref": ref}
            if src is not None:
                hop["uid"] = src["uid"]
                found, below = self._evaluate(src, sub, trail)
                height = max(height, below + 1)
                out += [{**f, "via": [hop, *f.get("via", [])]} for f in found]
                continue
            licence = rights.base_model_license(ref)
            if licence is not None:
                base_terms = {**rights.LICENCE_TERMS.get(licence, {}), "source": "base-model"}
                label = f"{ref} ({cat.licence_name(licence)})"
                for f in self.own(licence, base_terms, mode=sub, label=label, facts=None, known=True):
                    out.append({**f, "via": [hop]})
            else:
                out.append({**_f(UNKNOWN, "dangling-source", f"{key.replace('_', ' ')} {ref!r}: not an asset of "
                                                              "this project nor a base model comfyvn knows",
                                 "provenance"), "via": [hop]})
        return out, height

    def resolve(self, ref: str) -> dict | None:
        text = ref.lower()
        if _UID.match(text):
            return self.by_uid.get(text)
        if _SHA.match(text):
            return self.by_hash.get(text)
        return None


def _f(verdict: str, code: str, text: str, source: str | None, licence: str | None = None) -> dict:
    return {"verdict": verdict, "code": code, "text": text, "source": source, "licence": licence}


def _result(checker: _Checker, rec: dict) -> dict[str, Any]:
    findings = checker.evaluate(rec, "ship")
    licence, terms, override = checker.rights_of(rec)
    facts = asset_facts(rec)
    reasons = [f for f in findings if f["verdict"] in (BLOCKED, UNKNOWN)]
    duties = [f for f in findings if f["verdict"] == DUTIES]
    licences = sorted({f["licence"] for f in findings if f.get("licence")} | ({licence} if licence else set()))
    return {
        "uid": rec["uid"], "path": rec["path"], "type": rec["type"], **facts,
        "license": rights.licence_id(licence), "license_name": cat.licence_name(licence),
        "terms_source": terms.get("source"), "commercial_use": terms.get("commercial_use"),
        "verdict": _worst(f["verdict"] for f in findings), "reasons": reasons, "duties": duties,
        "credit_line": credit_line(facts, licence) if any(d["code"] == cat.CREDIT and not d.get("via")
                                                          for d in duties) else None,
        "licences": licences,
        "override": None if override is None else {k: override[k] for k in (
            "id", "license", "terms", "covers_sources", "note", "decided_by", "decided_at", "decided_at_utc")},
        "sources": [{"relation": k, "ref": r} for k, r in _links(rec)],
    }


def check_assets(records: list[dict], overrides: dict[str, dict], profile: UseProfile) -> list[dict]:
    """The verdict of each record (registry records, as ``AssetRegistry`` returns them), in path order."""
    checker = _Checker(records, overrides, profile)
    return [_result(checker, rec) for rec in sorted(records, key=lambda r: (r["path"], r["uid"]))]


def summarise(results: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for r in results:
        counts[r["verdict"]] += 1
    return counts


def check_project(registry: AssetRegistry, use: str | UseProfile | None = None) -> dict[str, Any]:
    """Check every asset of the registry's project under a use profile (name, or the default).

    Returns ``{"project", "use", "profile", "counts", "ok", "assets"}``; ``ok`` is true only when
    nothing is blocked or unknown (what a release gate needs)."""
    profile = use if isinstance(use, UseProfile) else use_profile(use, registry.ws)
    records = list(registry.iter_assets())
    results = check_assets(records, current_overrides(registry.db, registry.project_id), profile)
    counts = summarise(results)
    return {"project": registry.project_id, "use": profile.name, "profile": profile.to_dict(), "counts": counts,
            "ok": counts[BLOCKED] == 0 and counts[UNKNOWN] == 0, "assets": results}
