"""File names that come from outside (uploads, provider APIs, source files): one rule.

:func:`safe_filename` turns any such name into one harmless path component: the last part of a
``/`` or ``\\`` path, NFC-normalised, without invisible format characters (bidi overrides,
zero-width spaces and joiners, BOM: they make a name read as another), with controls, line
separators and the characters Windows refuses (``:*?"<>|``) replaced by ``_``, without leading
or trailing dots and spaces (no hidden names), and at most :data:`MAX_FILENAME_BYTES` bytes with
its extension kept.  The result always passes :func:`comfyvn.fsutil.safe_relative` as one name.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from .fsutil import safe_relative

#: below the file system's 255 (``fsutil.MAX_NAME_BYTES``): room for the staging prefix (``<job>-``) and the ``.asset.json`` sidecar suffix
MAX_FILENAME_BYTES: Final = 200
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
#: Unicode "format" characters (bidi controls, zero-width spaces and joiners, BOM...) are removed
_INVISIBLE: Final = frozenset({"Cf"})
#: other characters no file name should hold (C1 controls, line/paragraph separators, surrogates)
_REPLACED: Final = frozenset({"Cc", "Zl", "Zp", "Cs"})
_KEPT_EXTENSION_CHARS: Final = 16


def clean_filename(raw: str) -> str:
    """``raw`` made one harmless name (see the module docstring); ``""`` when nothing usable is left."""
    name = unicodedata.normalize("NFC", raw).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("" if unicodedata.category(c) in _INVISIBLE else "_" if unicodedata.category(c) in _REPLACED
                   else c for c in name)
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_FILENAME_BYTES:  # keep the extension, trim the stem
        stem, dot, ext = name.rpartition(".")
        keep = ext if dot and len(ext) <= _KEPT_EXTENSION_CHARS else ""
        budget = MAX_FILENAME_BYTES - len(keep.encode()) - 1
        name = (stem or name).encode()[:budget].decode("utf-8", "ignore").rstrip(" .") + (f".{keep}" if keep else "")
    if name:
        safe_relative(name, what="file name")  # the one path rule: never fails for a cleaned name
    return name


def safe_filename(name: str | None, fallback: str = "download.bin") -> str:
    """A name from outside reduced to one harmless path component (``fallback`` when nothing is left)."""
    return clean_filename(name or "") or fallback


__all__ = ["MAX_FILENAME_BYTES", "clean_filename", "safe_filename"]
