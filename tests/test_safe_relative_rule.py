"""fsutil.safe_relative (the one path rule for caller-named relative paths) checked against the rule
written plainly: PurePosixPath parts, a per-character category test; the same answer and the same
message for every input."""

from __future__ import annotations

import sys
import unicodedata
from pathlib import PurePosixPath

from hypothesis import given, settings
from hypothesis import strategies as st

from comfyvn.fsutil import DECEPTIVE_CHARS, MAX_NAME_BYTES, REFUSED_NAME_CHAR, UnsafePathError, safe_relative


def plain_rule(text: str, what: str = "path") -> PurePosixPath:
    if not text or "\x00" in text:
        raise UnsafePathError(f"{what} must be a non-empty relative path")
    text = text.replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafePathError(f"{what} {text!r} must be relative, not absolute")
    if any(part == ".." for part in pure.parts):
        raise UnsafePathError(f"{what} {text!r} may not contain '..'")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"{what} {text!r} names no file")
    if any(ch in DECEPTIVE_CHARS or unicodedata.category(ch) == "Cc" for ch in text):
        raise UnsafePathError(f"{what} {text!r} holds control or invisible format characters (bidi overrides, "
                              "zero-width spaces): they make a name look like another")
    long = next((p for p in parts if len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES), None)
    if long is not None:
        raise UnsafePathError(f"{what}: the name {long[:40]!r}... is over {MAX_NAME_BYTES} bytes, the file "
                              "system's limit")
    return PurePosixPath(*parts)


def outcome(fn, text: str) -> PurePosixPath | str:
    try:
        return fn(text)
    except UnsafePathError as exc:
        return f"refused: {exc}"


def same(text: str) -> None:
    assert outcome(safe_relative, text) == outcome(plain_rule, text), text


def test_the_refused_characters_are_exactly_the_controls_and_the_deceptive_ones() -> None:
    refused = {chr(c) for c in range(sys.maxunicode + 1) if REFUSED_NAME_CHAR.match(chr(c))}
    wanted = {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cc"} | DECEPTIVE_CHARS
    assert refused == wanted


def test_hand_picked_paths_get_the_plain_rule_s_answer() -> None:
    for text in ["a", "a/b.png", "./a", "a/./b", "a//b", "a/", "a/b/", ".", "./", "..", "a/..", "a/../b", "../a",
                 "/a", "//a", "\\a", "a\\b", "C:a", "c:/x", "x:", "a:b", "...", "a/.../b", ".hidden/x", "a/.", " ",
                 "a\u202eb", "a\x7fb", "a\x85b", "a\u200db", "\ufeff", "é/ü", "x" * 256, "x" * 255, "a/" + "é" * 128]:
        same(text)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(["a", "b.png", ".", "..", "", "/", "\\", ":", "x:", "\u202e", "\x1f", "\x85",
                                 "\u200d", "é", " ", "...", ".h"]), max_size=8).map("".join))
def test_every_path_gets_the_plain_rule_s_answer(text: str) -> None:
    same(text)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=30))
def test_any_text_gets_the_plain_rule_s_answer(text: str) -> None:
    same(text)
