"""A demo workspace with sample assets, and a JupyterLab launcher for it.

    python -m comfyvn.demo seed --workspace demo-workspace   # idempotent
    python -m comfyvn.demo lab  --workspace demo-workspace --notebooks notebooks
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import socket
import struct
import sys
import tempfile
import wave
from pathlib import Path

from .config import init_workspace, set_feature, workspace

# (type, name, colours, tags, licence)
_IMAGES = [
    ("backgrounds", "classroom_dusk", ("#f6a860", "#5b3f8c"), "school, dusk, interior", "cc0"),
    ("backgrounds", "rooftop_noon", ("#9ad0f5", "#f4f1de"), "school, day, exterior", "cc0"),
    ("backgrounds", "station_night", ("#0b1d3a", "#3c6e9f"), "city, night, exterior", "cc-by-4.0"),
    ("backgrounds", "shrine_spring", ("#f7cad0", "#8fb996"), "shrine, spring, exterior", "cc-by-4.0"),
    ("backgrounds", "library_rain", ("#4a5759", "#b0c4b1"), "school, rain, interior", "cc-by-sa-4.0"),
    ("backgrounds", "beach_sunset", ("#ff7b54", "#ffd56b"), "beach, dusk, exterior", None),
    ("characters", "aoi_neutral", ("#2a9d8f", "#e9c46a"), "aoi, neutral, sprite", "cc-by-4.0"),
    ("characters", "aoi_smile", ("#2a9d8f", "#f4a261"), "aoi, smile, sprite", "cc-by-4.0"),
    ("characters", "ren_neutral", ("#264653", "#e76f51"), "ren, neutral, sprite", "cc-by-4.0"),
    ("characters", "ren_angry", ("#264653", "#d62828"), "ren, angry, sprite", "cc-by-4.0"),
    ("characters", "mika_surprised", ("#8338ec", "#ffbe0b"), "mika, surprised, sprite", None),
    ("props", "umbrella", ("#3a86ff", "#ffffff"), "rain, item", "cc0"),
    ("props", "letter", ("#fefae0", "#bc6c25"), "item, story", "cc0"),
    ("props", "lantern", ("#ffb703", "#023047"), "night, item", "cc0"),
    ("ui", "textbox_frame", ("#22223b", "#c9ada7"), "ui, frame", "cc0"),
    ("ui", "choice_button", ("#4a4e69", "#f2e9e4"), "ui, button", "cc0"),
]
_SOUNDS = [
    ("audio", "chime", 880.0, "sfx, ui", "cc0"),
    ("audio", "door_knock", 180.0, "sfx, door", "cc-by-4.0"),
    ("audio", "theme_intro", 440.0, "bgm, theme", None),
]


def _hex(c: str) -> tuple[int, int, int]:
    return int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16)


def make_image(path: Path, kind: str, colours: tuple[str, str], seed: int) -> None:
    """A small, recognisable picture: a vertical gradient with a shape per asset type."""
    from PIL import Image, ImageDraw

    w, h = (960, 540) if kind == "backgrounds" else (400, 600) if kind == "characters" else (320, 320)
    top, bottom = _hex(colours[0]), _hex(colours[1])
    im = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(im)
    for y in range(h):
        t = y / max(1, h - 1)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    accent = tuple(255 - c for c in bottom)
    if kind == "backgrounds":
        for i in range(5):
            x = (seed * 97 + i * 193) % w
            draw.rectangle([x, h * 0.55, x + w * 0.12, h], fill=tuple(max(0, c - 40) for c in bottom))
        draw.ellipse([w * 0.7, h * 0.1, w * 0.82, h * 0.31], fill=(255, 244, 214))
    elif kind == "characters":
        draw.ellipse([w * 0.3, h * 0.08, w * 0.7, h * 0.36], fill=(250, 224, 200))
        draw.rounded_rectangle([w * 0.2, h * 0.38, w * 0.8, h * 0.98], radius=40, fill=top)
        draw.ellipse([w * 0.4, h * 0.2, w * 0.45, h * 0.24], fill=(30, 30, 30))
        draw.ellipse([w * 0.55, h * 0.2, w * 0.6, h * 0.24], fill=(30, 30, 30))
    else:
        draw.rounded_rectangle([w * 0.15, h * 0.15, w * 0.85, h * 0.85], radius=24, outline=accent, width=10)
    im.save(path, format="PNG")


def make_tone(path: Path, freq: float, seconds: float = 1.2, rate: int = 22050) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            env = math.exp(-3 * i / (seconds * rate))
            frames += struct.pack("<h", int(20000 * env * math.sin(2 * math.pi * freq * i / rate)))
        wav.writeframes(bytes(frames))


def seed(root: Path, *, quiet: bool = False) -> dict:
    """Create the demo workspace (once): sample images and sounds, registered with tags and licences."""
    from .studio.core.asset_registry import AssetRegistry

    ws = init_workspace(workspace(root))
    marker = ws.data_dir / ".demo_seeded"
    if marker.exists():
        if not quiet:
            print(f"demo workspace already seeded: {ws.root}")
        return {"workspace": str(ws.root), "registered": 0}
    set_feature("enable_asset_ingest", True, ws)
    registry = AssetRegistry(project_id="default", ws=ws)
    registered = 0
    with tempfile.TemporaryDirectory(prefix="comfyvn-demo-") as tmp:
        for i, (kind, name, colours, tags, licence) in enumerate(_IMAGES):
            src = Path(tmp) / f"{name}.png"
            make_image(src, kind, colours, i)
            registry.register_file(src, kind, tags=tags, license_tag=licence,
                                   metadata={"title": name.replace("_", " ").title(), "demo": True})
            registered += 1
        for kind, name, freq, tags, licence in _SOUNDS:
            src = Path(tmp) / f"{name}.wav"
            make_tone(src, freq)
            registry.register_file(src, kind, tags=tags, license_tag=licence, metadata={"title": name, "demo": True})
            registered += 1
    incoming = ws.root / "incoming"
    incoming.mkdir(exist_ok=True)
    for i, (name, colours) in enumerate([("cafe_morning", ("#ffe8d6", "#cb997e")),
                                         ("park_autumn", ("#dda15e", "#606c38"))]):
        make_image(incoming / f"{name}.png", "backgrounds", colours, 40 + i)
    registry.wait_for_thumbnails(60)
    marker.write_text("seeded\n")
    if not quiet:
        print(f"seeded demo workspace {ws.root}: {registered} assets, 2 files waiting in {incoming}")
    return {"workspace": str(ws.root), "registered": registered}


def _free_port(preferred: int) -> int:
    for port in [preferred, 0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def lab(root: Path, notebooks: Path, port: int = 8888) -> None:
    """Start JupyterLab on 127.0.0.1 on the workspace, print the URL with its token, and open the workbench."""
    ws = workspace(root)
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(24)
    port = _free_port(port)
    env = dict(os.environ, COMFYVN_HOME=str(ws.root), JUPYTER_TOKEN=token)
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            f"--ServerApp.root_dir={notebooks}", f"--IdentityProvider.token={token}",
            "--LabApp.default_url=/lab/tree/workbench.ipynb"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")
    url = f"http://127.0.0.1:{port}/lab/tree/workbench.ipynb?token={token}"
    print("\n  comfyvn workbench (JupyterLab) on workspace", ws.root)
    print(f"  open: {url}")
    print(f"  Voila: COMFYVN_HOME={ws.root} .venv/bin/voila {notebooks}/workbench.ipynb\n", flush=True)
    os.execve(sys.executable, args, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="comfyvn-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_seed = sub.add_parser("seed", help="create the demo workspace with sample assets (idempotent)")
    p_seed.add_argument("--workspace", default=os.environ.get("COMFYVN_HOME") or "demo-workspace")
    p_lab = sub.add_parser("lab", help="start JupyterLab on the workspace")
    p_lab.add_argument("--workspace", default=os.environ.get("COMFYVN_HOME") or "demo-workspace")
    p_lab.add_argument("--notebooks", default=str(Path(__file__).resolve().parents[1] / "notebooks"))
    p_lab.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    if args.cmd == "seed":
        seed(Path(args.workspace))
    else:
        lab(Path(args.workspace), Path(args.notebooks).resolve(), args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
