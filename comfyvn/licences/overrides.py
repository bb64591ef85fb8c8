"""Licence decisions people record for an asset, with a paper trail.

"Bought a commercial licence, invoice 123": a person states the licence and/or terms an asset
really has for this studio, why, and who they are.  Every decision is a row of
``licence_overrides`` (append-only: clearing one adds a ``cleared`` row), committed in the same
transaction as its ``on_asset_licence_override`` event, so hooks, webhooks and dashboards see it.
The check reads the newest decision of each asset; the manifest shows it with who and when.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from .. import rights
from ..errors import NotFound
from ..hooks.events import emit, utc_timestamp
from ..store import Database
from ..studio.core.asset_registry import AssetNotFoundError, AssetRegistry

TOPIC = "on_asset_licence_override"
TERMS = ("commercial_use", "credit_required", "derivatives_allowed", "relicense_allowed")
MAX_NOTE = 2000
MAX_WHO = 200


class OverrideNotFoundError(NotFound, LookupError):
    """The asset has no licence override to clear."""

    code = "override_not_found"


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required: say {'why' if name == 'note' else 'who decided'} "
                         "(it is the paper trail of the decision)")
    text = " ".join(value.split())
    if len(text) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")
    return text


def check_terms(terms: Any) -> dict[str, Any]:
    """Override terms: a subset of commercial_use, credit_required, derivatives_allowed, relicense_allowed."""
    if terms is None:
        return {}
    if not isinstance(terms, dict):
        raise ValueError(f"terms must be an object, got {type(terms).__name__}")
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown term(s) {', '.join(unknown)}; allowed: {', '.join(TERMS)}")
    level = terms.get("commercial_use")
    if level is not None and level not in rights.COMMERCIAL_LEVELS:
        raise ValueError(f"terms.commercial_use must be one of {', '.join(rights.COMMERCIAL_LEVELS)}, got {level!r}")
    for key in TERMS[1:]:
        if terms.get(key) is not None and not isinstance(terms[key], bool):
            raise ValueError(f"terms.{key} must be true, false or null, got {terms[key]!r}")
    return {k: terms[k] for k in TERMS if terms.get(k) is not None}


def effective_terms(override: dict) -> dict[str, Any]:
    """The rights an override gives the asset (stated terms win, its licence fills the rest)."""
    terms = rights.asset_rights(override["license"], {**override["terms"], "source": "user"})
    terms["source"] = "override"
    return terms


def _record(row: Any) -> dict[str, Any]:
    rec = dict(row)
    rec["terms"] = json.loads(rec["terms"] or "{}")
    rec["covers_sources"] = bool(rec["covers_sources"])
    rec["decided_at_utc"] = utc_timestamp(rec["decided_at"])
    return rec


def set_overrides(registry: AssetRegistry, uids: Iterable[str], *, note: str, decided_by: str,
                  license: str | None = None, terms: dict | None = None, covers_sources: bool = False) -> list[dict]:
    """Record one decision for each asset of ``uids`` (one transaction; every uid must exist)."""
    uids = list(dict.fromkeys(uids))
    if not uids:
        raise ValueError("no asset given")
    note, who = _text(note, "note", MAX_NOTE), _text(decided_by, "decided_by", MAX_WHO)
    licence = rights.licence_id(license) if license is not None else None
    if license is not None and not isinstance(license, str):
        raise ValueError(f"license must be a string or null, got {license!r}")
    given = check_terms(terms)
    if not licence and not given:
        raise ValueError("an override states a licence or at least one term (e.g. commercial_use)")
    if not isinstance(covers_sources, bool):
        raise ValueError("covers_sources must be true or false")
    missing = [uid for uid in uids if registry.get_asset(uid) is None]
    if missing:
        raise AssetNotFoundError(f"unknown asset uid(s) in project {registry.project_id!r}: {', '.join(missing)}")
    now = time.time()
    out = []
    with registry.db.transaction() as conn:
        for uid in uids:
            cur = conn.execute(
                "INSERT INTO licence_overrides(project_id, uid, action, license, terms, covers_sources, note,"
                " decided_by, decided_at) VALUES (?,?,?,?,?,?,?,?,?) RETURNING id",
                (registry.project_id, uid, "set", licence, json.dumps(given, sort_keys=True), int(covers_sources),
                 note, who, now))
            rec = _record(conn.execute("SELECT * FROM licence_overrides WHERE id = ?", cur.fetchone()).fetchone())
            emit(conn, TOPIC, _payload(rec), project_id=registry.project_id)
            out.append(rec)
    return out


def set_override(registry: AssetRegistry, uid: str, *, note: str, decided_by: str, license: str | None = None,
                 terms: dict | None = None, covers_sources: bool = False) -> dict:
    """Record a decision for one asset; returns the paper-trail row."""
    return set_overrides(registry, [uid], note=note, decided_by=decided_by, license=license, terms=terms,
                         covers_sources=covers_sources)[0]


def clear_override(registry: AssetRegistry, uid: str, *, note: str, decided_by: str) -> dict:
    """Withdraw an asset's current override (recorded as a ``cleared`` row; the trail stays)."""
    note, who = _text(note, "note", MAX_NOTE), _text(decided_by, "decided_by", MAX_WHO)
    with registry.db.transaction() as conn:
        if _current(conn, registry.project_id, [uid]).get(uid) is None:
            raise OverrideNotFoundError(f"asset {uid!r} of project {registry.project_id!r} has no licence override")
        cur = conn.execute(
            "INSERT INTO licence_overrides(project_id, uid, action, license, terms, covers_sources, note,"
            " decided_by, decided_at) VALUES (?,?,'cleared',NULL,'{}',0,?,?,?) RETURNING id",
            (registry.project_id, uid, note, who, time.time()))
        rec = _record(conn.execute("SELECT * FROM licence_overrides WHERE id = ?", cur.fetchone()).fetchone())
        emit(conn, TOPIC, _payload(rec), project_id=registry.project_id)
    return rec


def _payload(rec: dict) -> dict[str, Any]:
    return {"uid": rec["uid"], "project_id": rec["project_id"], "action": rec["action"], "override_id": rec["id"],
            "license": rec["license"], "terms": rec["terms"], "covers_sources": rec["covers_sources"],
            "note": rec["note"], "decided_by": rec["decided_by"], "decided_at": rec["decided_at"]}


def _current(conn: Any, project_id: str, uids: list[str] | None = None) -> dict[str, dict]:
    where, params = "project_id = ?", [project_id]
    if uids is not None:
        where += f" AND uid IN ({','.join('?' * len(uids))})"
        params += uids
    rows = conn.execute(f"SELECT * FROM licence_overrides WHERE id IN (SELECT MAX(id) FROM licence_overrides"
                        f" WHERE {where} GROUP BY uid) AND action = 'set'", params).fetchall()
    return {row["uid"]: _record(row) for row in rows}


def current_overrides(db: Database, project_id: str) -> dict[str, dict]:
    """Every asset's override in force, by uid."""
    return _current(db.conn, project_id)


def override_history(db: Database, project_id: str, uid: str | None = None, limit: int = 1000) -> list[dict]:
    """The paper trail, oldest first (one asset's, or the project's newest ``limit`` decisions)."""
    where, params = "project_id = ?", [project_id]
    if uid is not None:
        where += " AND uid = ?"
        params.append(uid)
    rows = db.conn.execute(f"SELECT * FROM licence_overrides WHERE {where} ORDER BY id DESC LIMIT ?",
                           [*params, int(limit)]).fetchall()
    return [_record(r) for r in reversed(rows)]
