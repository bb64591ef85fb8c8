"""Asset kinds: what a file is by its name, the asset type it gets, the type-name rule, tags.

The one home of these rules; ingest (:mod:`comfyvn.ingest.queue`), uploads
(``POST /assets/upload``) and the enforcer's rebuild (:mod:`comfyvn.registry.rebuild`) all ask
:func:`guess_type`, so one file gets one type whichever way it comes in::

    guess_type("hero.png") == "images"; guess_type("song.mp3") == "audio"
    guess_type("lora.sft") == "models"; guess_type("notes.xyz") == "misc"
    guess_type("weights.xyz", provider="civitai") == "models"  # a model provider's file

Previews are narrower than kinds: thumbnails are made of :data:`IMAGE_SUFFIXES`, waveforms of
:data:`WAVEFORM_SUFFIXES` only (:func:`comfyvn.studio.core.thumbnails.preview_kind`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath
from typing import Final, TypeGuard

from .provider_names import MODEL_PROVIDERS, provider_name

IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
AUDIO_SUFFIXES: Final = frozenset({".wav", ".mp3", ".ogg", ".flac", ".opus", ".m4a"})
MODEL_SUFFIXES: Final = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx"})
#: audio the thumbnailer draws a waveform of (it reads WAV only)
WAVEFORM_SUFFIXES: Final = frozenset({".wav"})

#: kind -> its suffixes, in the order they are tried
KIND_SUFFIXES: Final = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES, "model": MODEL_SUFFIXES}
#: kind -> the asset type a file of that kind gets when nobody names one
KIND_TYPES: Final = {"image": "images", "audio": "audio", "model": "models"}
#: the asset type of a file of no known kind
FALLBACK_TYPE: Final = "misc"

#: an asset type name: 1-64 lower-case letters, digits, '.', '_' or '-', not starting with a sign
TYPE_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TYPE_NAME_RULE: Final = "1-64 lower-case letters, digits, '.', '_' or '-'"


def file_kind(path: str | PurePath) -> str | None:
    """``"image"``, ``"audio"``, ``"model"`` by the file name's suffix (any case), else None."""
    suffix = PurePath(str(path)).suffix.lower()
    return next((kind for kind, suffixes in KIND_SUFFIXES.items() if suffix in suffixes), None)


def guess_type(path: str | PurePath, provider: str | None = None) -> str:
    """The asset type of a file nobody typed: by its kind, else ``models`` for a file from a
    model provider (Civitai, Hugging Face; aliases accepted), else :data:`FALLBACK_TYPE`."""
    kind = file_kind(path)
    if kind is not None:
        return KIND_TYPES[kind]
    if provider is not None and provider_name(provider) in MODEL_PROVIDERS:
        return KIND_TYPES["model"]
    return FALLBACK_TYPE


def is_type_name(value: object) -> TypeGuard[str]:
    """True when ``value`` is a valid asset type name (see :data:`TYPE_NAME_RE`)."""
    return isinstance(value, str) and TYPE_NAME_RE.match(value) is not None


def check_type_name(value: object, what: str = "asset_type") -> str:
    """``value`` when it is a valid asset type name, else ValueError naming ``what`` and the rule."""
    if not is_type_name(value):
        raise ValueError(f"{what} {value!r} must be {TYPE_NAME_RULE}")
    return value


def normalise_tags(tags: Iterable[str] | str | None) -> list[str]:
    """Tags as a clean list: strings split on commas, trimmed, lower-cased, inner runs of white
    space made one space, de-duplicated in order.  A tag that is no string is a ValueError."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = tags.split(",")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str):
            raise ValueError(f"tags must be strings, got {tag!r}")
        clean = " ".join(tag.strip().lower().split())
        if clean and clean not in out:
            out.append(clean)
    return out


__all__ = ["AUDIO_SUFFIXES", "FALLBACK_TYPE", "IMAGE_SUFFIXES", "KIND_SUFFIXES", "KIND_TYPES", "MODEL_SUFFIXES",
           "TYPE_NAME_RE", "TYPE_NAME_RULE", "WAVEFORM_SUFFIXES", "check_type_name", "file_kind", "guess_type",
           "is_type_name", "normalise_tags"]
