"""Helpers for the widget tests: a second process acting on the workspace, and polling with a deadline."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def register_in_subprocess(env: dict, src: Path, asset_type: str, dest: str, tags: str = "") -> str:
    """Register a file from a second Python process; returns the new uid."""
    code = textwrap.dedent(f"""
        from comfyvn.studio.core.asset_registry import AssetRegistry
        reg = AssetRegistry()
        rec = reg.register_file({str(src)!r}, {asset_type!r}, dest_relative={dest!r}, tags={tags!r})
        reg.wait_for_thumbnails(30)
        print(rec["uid"])
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def run_in_subprocess(env: dict, code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until truthy or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def make_png(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A small PNG whose bytes differ per seed (so each registers as a new asset)."""
    im = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 29 + 80) % 256))
    im.putpixel((seed % size[0], 0), (255, 255, 255))
    im.save(path, format="PNG")
    return path


def from_browser(widget, content: dict) -> None:
    """Deliver a custom message the way the browser's comm does (through Widget._handle_msg)."""
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})
