"""Deriving missing metadata of a file on disk: tags from its folders and file name, a licence
from a token in its file name or the nearest licence file (the enforcer's ``--fill-metadata``)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ..kinds import normalise_tags

LICENSE_FILE_NAMES = {"license", "license.txt", "license.md", "licence", "licence.txt", "licence.md", "copying"}

# cc0, cc-by-4.0, cc_by_sa_4_0, CC-BY-NC-ND-3.0 ... as a separate token of a file name
CC_TOKEN = re.compile(r"(?<![a-z0-9])(?:(?P<cc0>cc0)|cc[-_ ]?by(?P<mods>(?:[-_ ](?:nc|sa|nd)){0,2})"
                       r"(?:[-_ ]?(?P<major>\d)(?:[._](?P<minor>\d))?)?)(?![a-z0-9])")
SPDX_LINE = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+\-]+)", re.I)
BARE_SPDX = re.compile(r"^(CC0-1\.0|CC-BY(?:-NC)?(?:-SA|-ND)?-\d\.\d|MIT|Apache-2\.0|[A-Z][A-Za-z0-9.+\-]*-\d(?:\.\d)*)$")
TITLES = [  # well-known licence texts without an SPDX line: (pattern, tag)
    (re.compile(r"\bCC0 1\.0 Universal\b", re.I), "cc0"),
    (re.compile(r"Attribution-NonCommercial-ShareAlike (\d\.\d)", re.I), "cc-by-nc-sa-{}"),
    (re.compile(r"Attribution-NonCommercial-NoDerivatives? (\d\.\d)", re.I), "cc-by-nc-nd-{}"),
    (re.compile(r"Attribution-NonCommercial (\d\.\d)", re.I), "cc-by-nc-{}"),
    (re.compile(r"Attribution-ShareAlike (\d\.\d)", re.I), "cc-by-sa-{}"),
    (re.compile(r"Attribution-NoDerivatives? (\d\.\d)", re.I), "cc-by-nd-{}"),
    (re.compile(r"Creative Commons Attribution (\d\.\d)", re.I), "cc-by-{}"),
    (re.compile(r"^\s*MIT License\b", re.I | re.M), "mit"),
    (re.compile(r"Apache License,?\s+Version 2\.0", re.I), "apache-2.0"),
]
NOISE = re.compile(r"^(v\d+|\d+|final|copy|new|old|tmp|temp|draft|wip|[0-9a-f]{8,})$")


def spdx_to_tag(identifier: str) -> str:
    """``CC-BY-4.0`` -> ``cc-by-4.0``; ``CC0-1.0`` -> ``cc0`` (the registry's licence tags)."""
    tag = identifier.strip().lower()
    return "cc0" if tag.startswith("cc0") else tag


def license_token(text: str) -> str | None:
    """The Creative Commons licence named by a token in ``text`` (``cc_by_sa_4_0`` -> ``cc-by-sa-4.0``)."""
    m = CC_TOKEN.search(text.lower())
    if not m:
        return None
    if m.group("cc0"):
        return "cc0"
    tag = "cc-by" + "".join("-" + mod for mod in re.findall(r"nc|sa|nd", m.group("mods") or ""))
    if m.group("major"):
        tag += f"-{m.group('major')}.{m.group('minor') or '0'}"
    return tag


def license_from_file(path: Path) -> str | None:
    """The licence a LICENSE file declares (SPDX line, bare SPDX id or a well-known title)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:20_000]
    except OSError:
        return None
    m = SPDX_LINE.search(text)
    if m:
        return spdx_to_tag(m.group(1))
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if BARE_SPDX.match(first):
        return spdx_to_tag(first)
    for pattern, tag in TITLES:
        hit = pattern.search(text)
        if hit:
            return tag.format(*hit.groups())
    return None


def derive_license(assets_root: Path, rel: str) -> tuple[str | None, str]:
    """``(licence, where it came from)`` for an asset: a token in its file name wins, else the
    nearest LICENSE file in its folder or a parent folder up to the assets root."""
    pure = PurePosixPath(rel)
    token = license_token(pure.name)
    if token:
        return token, f"file name token in {pure.name!r}"
    root = Path(assets_root)
    folder = pure.parent
    unrecognised: list[str] = []
    while True:
        here = root / folder
        try:
            names = {p.name.lower(): p for p in here.iterdir() if p.is_file()}
        except OSError:
            names = {}
        for name in sorted(LICENSE_FILE_NAMES):
            if name in names:
                found = license_from_file(names[name])
                if found:
                    return found, f"licence file {(PurePosixPath(folder) / names[name].name).as_posix()}"
                unrecognised.append((PurePosixPath(folder) / names[name].name).as_posix())
        if folder == PurePosixPath(".") or str(folder) in ("", "."):
            break
        folder = folder.parent
    if unrecognised:
        return None, (f"licence file {unrecognised[0]} not recognised (add a line "
                      "'SPDX-License-Identifier: CC-BY-4.0' or similar)")
    return None, "no licence token in the file name and no LICENSE file in its folder or above"


def derive_tags(rel: str, asset_type: str | None = None) -> list[str]:
    """Tags from the folders (below the type folder) and the words of the file name."""
    pure = PurePosixPath(rel)
    folders = list(pure.parent.parts)
    if folders and asset_type and folders[0].lower() == asset_type.lower():
        folders = folders[1:]
    tags = [re.sub(r"[\s_]+", "-", f.strip().lower()) for f in folders]
    stem = pure.name[: -len("".join(pure.suffixes))] if pure.suffixes else pure.name
    stem = CC_TOKEN.sub(" ", stem.lower())
    for word in re.split(r"[\s_\-.,()\[\]+]+", stem):
        if len(word) >= 2 and not NOISE.match(word) and word != (asset_type or "").lower():
            tags.append(word)
    return normalise_tags(t for t in tags if t)
