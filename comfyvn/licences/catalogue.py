"""What a release owes each licence: its name, where to read it, its shipped text and its duties.

Keyed by the licence ids of :mod:`comfyvn.rights`; the terms themselves (commercial use, credit,
derivatives) stay in :data:`comfyvn.rights.LICENCE_TERMS`.  Full texts ship in ``texts/`` (their
sources are in ``texts/SOURCES.md``); other licences get a link.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from .. import rights

# duty kinds (a duty applies when the use profile distributes the build)
CREDIT = "credit"
NOTICE = "licence-notice"
SHARE_ALIKE = "share-alike"
USE_RESTRICTIONS = "use-restrictions"
NO_MODIFICATION = "no-modification"
REVENUE_THRESHOLD = "revenue-threshold"
DUTY_KINDS = (CREDIT, NOTICE, SHARE_ALIKE, USE_RESTRICTIONS, NO_MODIFICATION, REVENUE_THRESHOLD)


@dataclass(frozen=True)
class LicenceInfo:
    id: str
    name: str
    url: str | None
    text_file: str | None = None
    notice: bool = True  # its text (or link) must go with the build
    share_alike: bool = False
    use_restrictions: bool = False  # OpenRAIL: the use restrictions travel with the model and derivatives
    revenue_threshold: bool = False  # commercial use only under the licence's revenue threshold


_CC = "https://creativecommons.org/licenses/{}/4.0/legalcode"
CATALOGUE: dict[str, LicenceInfo] = {info.id: info for info in (
    LicenceInfo("cc0-1.0", "CC0 1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/legalcode",
                "cc0-1.0.txt", notice=False),
    LicenceInfo("cc-by-4.0", "Creative Commons Attribution 4.0 International", _CC.format("by"), "cc-by-4.0.txt"),
    LicenceInfo("cc-by-sa-4.0", "Creative Commons Attribution-ShareAlike 4.0 International", _CC.format("by-sa"),
                "cc-by-sa-4.0.txt", share_alike=True),
    LicenceInfo("cc-by-nc-4.0", "Creative Commons Attribution-NonCommercial 4.0 International", _CC.format("by-nc")),
    LicenceInfo("cc-by-nc-sa-4.0", "Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International",
                _CC.format("by-nc-sa"), share_alike=True),
    LicenceInfo("cc-by-nd-4.0", "Creative Commons Attribution-NoDerivatives 4.0 International", _CC.format("by-nd")),
    LicenceInfo("cc-by-nc-nd-4.0", "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 International",
                _CC.format("by-nc-nd")),
    LicenceInfo("apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0", "apache-2.0.txt"),
    LicenceInfo("mit", "MIT License", "https://opensource.org/license/mit", "mit.txt"),
    LicenceInfo("creativeml-openrail-m", "CreativeML OpenRAIL-M",
                "https://github.com/CompVis/stable-diffusion/blob/main/LICENSE", "creativeml-openrail-m.txt",
                use_restrictions=True),
    LicenceInfo("openrail++", "CreativeML Open RAIL++-M",
                "https://github.com/Stability-AI/generative-models/blob/main/model_licenses/LICENSE-SDXL1.0",
                "openrail++.txt", use_restrictions=True),
    LicenceInfo("openrail", "Open RAIL", "https://www.licenses.ai/", use_restrictions=True),
    LicenceInfo(rights.FLUX_DEV_NC, "FLUX.1 [dev] Non-Commercial License",
                "https://github.com/black-forest-labs/flux/blob/main/model_licenses/LICENSE-FLUX1-dev"),
    LicenceInfo(rights.STABILITY_COMMUNITY, "Stability AI Community License",
                "https://stability.ai/community-license-agreement", revenue_threshold=True),
)}


def licence_info(licence: str | None) -> LicenceInfo | None:
    return CATALOGUE.get(rights.licence_id(licence) or "")


def licence_name(licence: str | None) -> str | None:
    """A licence's full name (its id when the catalogue does not know it; None for none)."""
    info = licence_info(licence)
    return info.name if info else rights.licence_id(licence)


@cache
def licence_text(licence: str) -> str | None:
    """The full text shipped for ``licence`` (None when only a link is known)."""
    info = licence_info(licence)
    if info is None or info.text_file is None:
        return None
    return (resources.files(__package__) / "texts" / info.text_file).read_text(encoding="utf-8")
