"""Start Voila on a notebook and drive Debian's Chromium with Playwright (async API)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
DOCS_IMG = REPO / "docs" / "img"
VOILA = Path(sys.executable).with_name("voila")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Voila asks a CDN for Font Awesome (offline here); fail such requests at once instead of waiting
OFFLINE_HOSTS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def voila_server(notebook: str, env: dict[str, str], tmp: Path, timeout: float = 60.0) -> Iterator[str]:
    """Serve ``notebooks/<notebook>.ipynb`` with Voila on 127.0.0.1; yields the page URL."""
    port = free_port()
    jupyter_env = dict(env)
    for var, sub in (("JUPYTER_CONFIG_DIR", "jconfig"), ("JUPYTER_RUNTIME_DIR", "jruntime"),
                     ("IPYTHONDIR", "ipython")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        jupyter_env[var] = str(tmp / sub)
    jupyter_env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    log = open(tmp / f"voila-{notebook}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(VOILA), str(NOTEBOOKS / f"{notebook}.ipynb"), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--MappingKernelManager.cull_idle_timeout=120", "--MappingKernelManager.cull_interval=30",
         "--show_tracebacks=False"],
        env=jupyter_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(NOTEBOOKS))
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"voila exited early: {(tmp / f'voila-{notebook}.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "api/status", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("voila did not answer in time")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def open_browser(playwright, *, clipboard: bool = False, width: int = 1440, height: int = 1000):
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    context = await browser.new_context(viewport={"width": width, "height": height}, device_scale_factor=1)
    if clipboard:
        await context.grant_permissions(["clipboard-read", "clipboard-write"])

    async def block_cdn(route):
        await route.abort()

    for host in OFFLINE_HOSTS:
        await context.route(f"**://{host}/**", block_cdn)
    return browser, context


# (type, name, colours, tags, licence, metadata)
ASSETS = [
    ("backgrounds", "classroom_dusk", ("#f6a860", "#5b3f8c"), "school, dusk", "cc0", {"title": "Classroom at dusk"}),
    ("backgrounds", "station_night", ("#0b1d3a", "#3c6e9f"), "city, night", "cc-by-4.0", {"title": "Station night"}),
    ("backgrounds", "shrine_spring", ("#f7cad0", "#8fb996"), "shrine, spring", "cc-by-4.0", {"title": "Shrine"}),
    ("characters", "aoi_smile", ("#2a9d8f", "#f4a261"), "aoi, sprite", "cc-by-4.0",
     {"title": "Aoi smile", "pose": {"mood": "happy", "layers": ["base", "face"]}}),
    ("characters", "ren_neutral", ("#264653", "#e76f51"), "ren, sprite", None, {"title": "Ren"}),
    ("characters", "mika_surprised", ("#8338ec", "#ffbe0b"), "mika, sprite", None,
     {"title": "Mika – überrascht ★", "voice": {"lang": "de", "lines": ["Oh!", "Wirklich?"]}}),
    ("props", "umbrella", ("#3a86ff", "#ffffff"), "rain, item", "cc0", {"title": "Umbrella"}),
    ("props", "lantern", ("#ffb703", "#023047"), "night, item", "cc0", {"title": "Lantern"}),
]


def picture(path: Path, kind: str, colours: tuple[str, str], seed: int) -> Path:
    """A recognisable PNG: a gradient with a shape per asset type."""
    w, h = (480, 270) if kind == "backgrounds" else (200, 300) if kind == "characters" else (160, 160)
    top = tuple(int(colours[0][i:i + 2], 16) for i in (1, 3, 5))
    bottom = tuple(int(colours[1][i:i + 2], 16) for i in (1, 3, 5))
    im = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(im)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    if kind == "characters":
        draw.ellipse([w * 0.3, h * 0.08, w * 0.7, h * 0.36], fill=(250, 224, 200))
        draw.rounded_rectangle([w * 0.2, h * 0.4, w * 0.8, h * 0.98], radius=20, fill=top)
    elif kind == "backgrounds":
        draw.ellipse([w * 0.7, h * 0.1, w * 0.8, h * 0.28], fill=(255, 244, 214))
        for i in range(4):
            x = (seed * 61 + i * 113) % w
            draw.rectangle([x, h * 0.6, x + w * 0.1, h], fill=tuple(max(0, c - 40) for c in bottom))
    else:
        draw.rounded_rectangle([w * 0.2, h * 0.2, w * 0.8, h * 0.8], radius=16, outline=(30, 30, 30), width=8)
    im.putpixel((seed, 0), (seed, seed, seed))
    im.save(path, format="PNG")
    return path


UPDATE_SCREENSHOTS = "COMFYVN_UPDATE_SCREENSHOTS"


def screenshot_dir(tmp: Path) -> Path:
    """``docs/img`` when ``COMFYVN_UPDATE_SCREENSHOTS=1`` (re-taking the README's screenshots),
    else a folder of the test's own: a normal test run never changes tracked files."""
    folder = DOCS_IMG if os.environ.get(UPDATE_SCREENSHOTS) == "1" else tmp / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class explain_failures:
    """``async with explain_failures(page, folder):`` -- on failure, keep a screenshot and the page text.

    The assertion then shows what the person would have seen (e.g. a readable error panel).
    """

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder = page, Path(folder)

    async def __aenter__(self):
        return self.page

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        shot = self.folder / "failure.png"
        try:
            await self.page.screenshot(path=str(shot), full_page=True)
            text = await self.page.evaluate("document.body ? document.body.innerText.slice(0, 3000) : ''")
        except Exception as inner:  # the page itself may be gone
            text = f"(page text unavailable: {inner})"
        raise AssertionError(f"{type(exc).__name__}: {exc}\n--- page text ---\n{text}\n--- screenshot: {shot}") from exc
