"""Licences as structured rights: what may a person do with an asset?

Every asset carries a ``license`` identifier (SPDX where one exists, lower-case, e.g.
``cc0-1.0``, ``cc-by-4.0``, ``apache-2.0``, ``creativeml-openrail-m``, ``openrail++``; the
documented ids below for the rest) and ``license_terms``::

    {"commercial_use": "none" | "image" | "rent-civit" | "rent" | "sell" | None,
     "credit_required": bool | None, "derivatives_allowed": bool | None,
     "relicense_allowed": bool | None,
     "source": "provider" | "licence-file" | "user" | "base-model" | None,
     "base_model_license": str | None}

``None`` means "not stated": never read it as permission.  Civitai states the terms per model
(``allowCommercialUse`` & co.); a licence id alone gives them through :data:`LICENCE_TERMS`;
an asset trained on a base model also carries that model's licence (:func:`base_model_license`).
See docs/REMOTE_PULLS.md ("Rights") for the tables and their sources.
"""

from __future__ import annotations

import re
from typing import Any

# Civitai's commercial-use permissions, least to most; the summary level is the highest allowed.
CIVITAI_COMMERCIAL = ("Image", "RentCivit", "Rent", "Sell")
COMMERCIAL_LEVELS = ("none", "image", "rent-civit", "rent", "sell")
_LEVEL_OF = dict(zip(CIVITAI_COMMERCIAL, COMMERCIAL_LEVELS[1:], strict=True))
# Civitai's migration of the old single value into the list (a ladder, not a literal copy)
_LADDER = {"none": [], "image": ["Image"], "rentcivit": ["Image", "RentCivit"],
           "rent": ["Image", "RentCivit", "Rent"], "sell": ["Image", "RentCivit", "Rent", "Sell"]}
_CANONICAL = {name.lower(): name for name in CIVITAI_COMMERCIAL}

TERM_KEYS = ("commercial_use", "credit_required", "derivatives_allowed", "relicense_allowed", "source",
             "base_model_license")

# ids for licences without an SPDX id (documented in docs/REMOTE_PULLS.md)
FLUX_DEV_NC = "flux-1-dev-non-commercial"
STABILITY_COMMUNITY = "stabilityai-community"

# licence id -> terms it grants by itself (None = the licence does not settle it)
LICENCE_TERMS: dict[str, dict[str, Any]] = {
    "cc0-1.0": {"commercial_use": "sell", "credit_required": False, "derivatives_allowed": True,
                "relicense_allowed": True},
    "cc-by-4.0": {"commercial_use": "sell", "credit_required": True, "derivatives_allowed": True,
                  "relicense_allowed": True},
    "cc-by-sa-4.0": {"commercial_use": "sell", "credit_required": True, "derivatives_allowed": True,
                     "relicense_allowed": False},
    "cc-by-nc-4.0": {"commercial_use": "none", "credit_required": True, "derivatives_allowed": True,
                     "relicense_allowed": False},
    "cc-by-nc-sa-4.0": {"commercial_use": "none", "credit_required": True, "derivatives_allowed": True,
                        "relicense_allowed": False},
    "cc-by-nd-4.0": {"commercial_use": "sell", "credit_required": True, "derivatives_allowed": False,
                     "relicense_allowed": False},
    "cc-by-nc-nd-4.0": {"commercial_use": "none", "credit_required": True, "derivatives_allowed": False,
                        "relicense_allowed": False},
    "apache-2.0": {"commercial_use": "sell", "credit_required": True, "derivatives_allowed": True,
                   "relicense_allowed": True},
    "mit": {"commercial_use": "sell", "credit_required": True, "derivatives_allowed": True,
            "relicense_allowed": True},
    # OpenRAIL: commercial use allowed, the use restrictions must travel with every copy/derivative
    "creativeml-openrail-m": {"commercial_use": "sell", "credit_required": None, "derivatives_allowed": True,
                              "relicense_allowed": False},
    "openrail++": {"commercial_use": "sell", "credit_required": None, "derivatives_allowed": True,
                   "relicense_allowed": False},
    "openrail": {"commercial_use": "sell", "credit_required": None, "derivatives_allowed": True,
                 "relicense_allowed": False},
    FLUX_DEV_NC: {"commercial_use": "none", "credit_required": None, "derivatives_allowed": True,
                  "relicense_allowed": False},
    # commercial use only under the licence's annual-revenue threshold
    STABILITY_COMMUNITY: {"commercial_use": "sell", "credit_required": None, "derivatives_allowed": True,
                          "relicense_allowed": False},
}

# Hugging Face / Civitai spellings -> our ids
_ALIASES = {"creativeml-openrail-m": "creativeml-openrail-m", "openrail++": "openrail++", "cc0": "cc0-1.0",
            "flux-1-dev-non-commercial-license": FLUX_DEV_NC, "stabilityai-ai-community": STABILITY_COMMUNITY,
            "stabilityai-community-license": STABILITY_COMMUNITY}

# base model (Civitai ``baseModel`` or a Hugging Face ``base_model`` repo id) -> its publisher's licence
_BASE_MODELS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.I), lic) for p, lic in (
    (r"^sd ?1\.[45]( (lcm|hyper))?$", "creativeml-openrail-m"),
    (r"^(compvis/stable-diffusion-v1-[1-4]|(runwayml|stable-diffusion-v1-5)/stable-diffusion-v1-5)$",
     "creativeml-openrail-m"),
    (r"^sd ?2\.[01]( 768| unclip)?$", "openrail++"),
    (r"^stabilityai/stable-diffusion-2(-1)?(-base)?$", "openrail++"),
    (r"^sdxl 1\.0( lcm)?$", "openrail++"),
    (r"^stabilityai/stable-diffusion-xl-(base|refiner)-1\.0$", "openrail++"),
    (r"^sd ?3(\.5)?( (large|medium|large turbo))?$", STABILITY_COMMUNITY),
    (r"^stabilityai/stable-diffusion-3(\.5)?-(medium|large|large-turbo)(-diffusers)?$", STABILITY_COMMUNITY),
    (r"^flux\.1 d$|^black-forest-labs/flux\.1-dev$", FLUX_DEV_NC),
    (r"^flux\.1 s$|^black-forest-labs/flux\.1-schnell$", "apache-2.0"),
))


def licence_id(value: Any) -> str | None:
    """A licence name as our id (lower-case SPDX-like); None for nothing."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    return _ALIASES.get(text, text)


def base_model_license(base_model: Any) -> str | None:
    """The licence the publisher of ``base_model`` states (None when we do not know it)."""
    if not isinstance(base_model, str):
        return None
    text = base_model.strip()
    return next((lic for pattern, lic in _BASE_MODELS if pattern.match(text)), None)


def civitai_commercial_use(value: Any) -> list[str] | None:
    """Civitai ``allowCommercialUse`` in any of its forms -> the list Civitai means today.

    A single old-style value climbs the ladder Civitai's migration used (``"Rent"`` ->
    ``["Image", "RentCivit", "Rent"]``); a list or a Postgres literal (``"{Image,RentCivit}"``,
    ``["{Image,RentCivit,Rent}"]``) is taken as written; ``"None"`` and ``[]`` are ``[]``.
    """
    if value is None:
        return None
    if isinstance(value, str) and not value.strip().startswith("{"):
        key = value.strip().lower()
        return list(_LADDER.get(key, [_CANONICAL[key]] if key in _CANONICAL else []))
    items: list[str] = []
    for raw in value if isinstance(value, (list, tuple)) else [value]:
        if not isinstance(raw, str):
            continue
        text = raw.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        for part in text.split(","):
            name = part.strip().strip('"').strip()
            name = _CANONICAL.get(name.lower(), name)
            if name and name.lower() != "none" and name not in items:
                items.append(name)
    return items


def commercial_level(allowed: list[str] | None) -> str | None:
    """The highest commercial use a Civitai list allows (``[]`` -> ``"none"``)."""
    if allowed is None:
        return None
    levels = [_LEVEL_OF[a] for a in allowed if a in _LEVEL_OF]
    return max(levels, key=COMMERCIAL_LEVELS.index) if levels else "none"


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return None


def civitai_terms(model: dict, base_model: Any = None) -> dict[str, Any]:
    """Structured terms from a Civitai model's permission fields (absent fields stay None)."""
    no_credit = _bool(model.get("allowNoCredit"))
    terms = {
        "commercial_use": commercial_level(civitai_commercial_use(model.get("allowCommercialUse"))),
        "credit_required": None if no_credit is None else not no_credit,
        "derivatives_allowed": _bool(model.get("allowDerivatives")),
        "relicense_allowed": _bool(model.get("allowDifferentLicense")),
        "source": None,
        "base_model_license": base_model_license(base_model),
    }
    stated = any(k in model for k in ("allowNoCredit", "allowCommercialUse", "allowDerivatives",
                                      "allowDifferentLicense"))
    terms["source"] = "provider" if stated else ("base-model" if terms["base_model_license"] else None)
    return terms


def licence_terms(licence: str | None, *, source: str | None, base_model: Any = None) -> dict[str, Any]:
    """Terms a licence id grants by itself (unknown licence: every term None)."""
    known = LICENCE_TERMS.get(licence_id(licence) or "")
    terms: dict[str, Any] = dict.fromkeys(TERM_KEYS)
    if known:
        terms.update(known)
    terms["source"] = source if (known or licence) else None
    terms["base_model_license"] = base_model_license(base_model)
    if terms["source"] is None and terms["base_model_license"]:
        terms["source"] = "base-model"
    return terms


def asset_rights(licence: str | None, stated: Any = None, *, base_model: Any = None) -> dict[str, Any]:
    """The rights an asset carries: the one decision the registry, the migration and the filters use.

    ``stated`` terms with a ``source`` (a provider's permissions, e.g. Civitai's, or terms a
    person set) win; a licence fills only the terms they leave unstated.  Without stated terms
    the licence id decides (``source="user"``: someone chose it).  The base model's licence is
    kept from ``stated`` or derived from ``base_model``.  Every :data:`TERM_KEYS` key is present.
    """
    stated = stated if isinstance(stated, dict) else {}
    if stated.get("source"):
        terms: dict[str, Any] = {key: stated.get(key) for key in TERM_KEYS}
        for key, value in LICENCE_TERMS.get(licence_id(licence) or "", {}).items():
            if terms[key] is None:
                terms[key] = value
    else:
        terms = licence_terms(licence, source="user")
    if terms["commercial_use"] not in COMMERCIAL_LEVELS:
        terms["commercial_use"] = None
    for key in ("credit_required", "derivatives_allowed", "relicense_allowed"):
        terms[key] = _bool(terms[key])
    terms["base_model_license"] = (stated.get("base_model_license") if isinstance(stated.get("base_model_license"), str)
                                   else base_model_license(base_model))
    if terms["source"] is None and terms["base_model_license"]:
        terms["source"] = "base-model"
    return terms


def licence_known(licence: str | None, terms: dict[str, Any]) -> bool:
    """Is anything known about the asset's own rights?  A licence id, or terms stated by a
    provider, a licence file or a person; a base model's licence alone is not the asset's."""
    return bool(licence) or terms.get("source") not in (None, "base-model")


def commercial_rank(level: Any) -> int | None:
    """A commercial-use level's place in ``none < image < rent-civit < rent < sell`` (None if unknown)."""
    return COMMERCIAL_LEVELS.index(level) if level in COMMERCIAL_LEVELS else None


__all__ = ["CIVITAI_COMMERCIAL", "COMMERCIAL_LEVELS", "FLUX_DEV_NC", "LICENCE_TERMS", "STABILITY_COMMUNITY",
           "TERM_KEYS", "asset_rights", "base_model_license", "civitai_commercial_use", "civitai_terms",
           "commercial_level", "commercial_rank", "licence_id", "licence_known", "licence_terms"]
